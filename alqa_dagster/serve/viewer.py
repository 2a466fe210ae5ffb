"""The worklist's viewer and editor: a case's manifest, its volumes, its attention regions, and 3D Slicer's link.

The page (``static/viewer.js``, NiiVue) opens a work package version from
its manifest (``GET /alqa/cases/{case}/{package}/viewer``): the organ
legend (one colour per organ of the campaign's table), the organs to fix,
content-hash URLs of the CT, the pseudo label and the attention map, and
the lease. Volumes are the package's own ``.nii.gz`` files, sent as they
are with ``Content-Encoding: gzip`` when the client accepts it (the browser
inflates them natively: no recompression here, no JavaScript gunzip there)
and decompressed while streaming otherwise; the URL carries the file's
sha256 and the ETag is that hash (``If-None-Match`` gets 304). The regions
to jump through come from :func:`alqa_core.annotation.queue.regions.attention_regions`,
computed once per package (packages never change). Saving goes through
``PUT /datastore/label`` like 3D Slicer's "Submit label".

3D Slicer's URL handler (``slicer://viewer/?image=..&segmentation=..``, the
Sandbox extension's LoadRemoteFile module) downloads with a plain GET and no
token, so its two files are served under the id's capability, as
``/datastore/image`` is: the CT as an uncompressed-name ``.nii`` (that module
names the download by the URL's last extension, which would turn
``.nii.gz`` into an unreadable ``.gz``) and the package's ``.seg.nrrd``.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from alqa_core.annotation.queue.regions import attention_regions, organ_regions
from alqa_core.annotation.queue.work_package import WorkPackage
from alqa_core.organs import OrganTable
from alqa_core.render import organ_color
from alqa_dagster.serve.auth import annotator, state_of
from alqa_dagster.serve.ids import BadId, capability_ok, image_ref, parse_image_id
from alqa_dagster.serve.leases import lease_view
from alqa_dagster.serve.worklist import package_or_404

router = APIRouter(prefix="/alqa")
#: the volumes a viewer loads: the name it asks for -> the package's file
VOLUMES = {"image.nii": "image.nii.gz", "pseudo_label.nii": "pseudo_label.nii.gz", "attention.nii": "attention.nii.gz"}
#: what 3D Slicer's URL handler may fetch with an image id's capability
SLICER_FILES = {"image.nii": "image.nii.gz", "pseudo_label.seg.nrrd": "pseudo_label.seg.nrrd"}
#: CT window presets (width, level) in HU, as radiology workstations name them
WINDOWS = {"abdomen": (400, 40), "liver": (150, 30), "bone": (1800, 400)}
#: the viewer's colours for the default organs: Slicer's anatomy colours (the packages' colour tables) give both kidneys
#: one colour and liver, stomach, aorta and pancreas nearly one, which cannot be told apart while editing; these keep
#: Slicer's where they are distinct (liver, spleen, gallbladder, vena cava) and stay clear of the attention layer's yellow
VIEWER_COLORS = {
    "liver": (221, 130, 101), "spleen": (157, 108, 162), "kidney_right": (60, 180, 75), "kidney_left": (0, 128, 128),
    "gallbladder": (139, 150, 98), "stomach": (250, 190, 212), "aorta": (230, 25, 75), "inferior_vena_cava": (0, 151, 206),
    "pancreas": (170, 110, 40),
}
#: well-separated colours for other organs whose table colour is too close to an earlier organ's
_SPARE = ((0, 0, 128), (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 130, 200), (128, 0, 0), (170, 255, 195),
          (220, 190, 255), (255, 215, 180), (60, 180, 75), (245, 130, 48))
#: two legend colours closer than this (Euclidean RGB) are too alike to tell voxels apart while editing
MIN_COLOR_DISTANCE = 60.0


def _distance(a, b) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def legend(table: OrganTable) -> list[dict]:
    """One entry per organ: name, label value, and a colour no other organ's is close to (the table's where it can be)."""
    chosen: list[tuple[int, int, int]] = []
    out = []
    for i, organ in enumerate(table.organs):
        color = VIEWER_COLORS.get(organ.name) or tuple(organ_color(organ.name, i))
        if any(_distance(color, c) < MIN_COLOR_DISTANCE for c in chosen):
            far = [c for c in _SPARE if all(_distance(c, d) >= MIN_COLOR_DISTANCE for d in chosen)]
            color = far[0] if far else tuple((37 * (i + 1) * k) % 256 for k in (3, 5, 7))
        chosen.append(color)
        out.append({"name": organ.name, "value": int(organ.value), "color": list(color)})
    return out


def _volume_url(case_id: str, package_id: str, sha: str, name: str) -> str:
    return f"/alqa/volumes/{case_id}/{package_id}/{sha}/{name}"


def _manifest(state, package: WorkPackage, who: str) -> dict:
    ref = image_ref(state.key, package.case_id, package.package_id)
    volumes = {}
    for name, file in VOLUMES.items():
        path = package.folder / file
        sha = state.sha256(path)
        volumes[name.split(".")[0]] = {"url": _volume_url(package.case_id, package.package_id, sha, name), "sha256": sha, "bytes": path.stat().st_size}
    return {
        "case_id": package.case_id, "package_id": package.package_id, "round": package.round_index,
        "image_id": f"{package.case_id}.{package.package_id}", "organs_to_fix": list(package.organs_to_fix),
        "organs": legend(state.settings.campaign.organ_table), "volumes": volumes, "windows": {k: list(v) for k, v in WINDOWS.items()},
        "regions_url": f"/alqa/cases/{package.case_id}/{package.package_id}/regions",
        "lease": lease_view(state.leases.lease_of(package.case_id), who),
        "slicer": {name: f"/alqa/slicer/{ref.image_id()}/{name}" for name in SLICER_FILES},
    }


@router.get("/cases/{case_id}/{package_id}/viewer")
async def viewer_manifest(case_id: str, package_id: str, request: Request, who: str = Depends(annotator)) -> dict:
    """What the viewer needs to open one package version (checksums are computed once per file, in a worker thread)."""
    state = state_of(request)
    package = package_or_404(state, case_id, package_id)
    return await anyio.to_thread.run_sync(_manifest, state, package, who)


def _send_nifti(request: Request, path: Path, sha: str, name: str) -> Response:
    """A package's ``.nii.gz`` as ``name`` (``.nii``): gzip in transit when accepted, inflated while streaming otherwise."""
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "Content-Disposition": f'attachment; filename="{name}"'}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return FileResponse(path, media_type="application/octet-stream", headers={**headers, "Content-Encoding": "gzip"})

    def inflate():
        with gzip.open(path, "rb") as fh:
            while block := fh.read(2**20):
                yield block

    return StreamingResponse(inflate(), media_type="application/octet-stream", headers=headers)


@router.get("/volumes/{case_id}/{package_id}/{sha}/{name}")
async def volume(case_id: str, package_id: str, sha: str, name: str, request: Request, who: str = Depends(annotator)) -> Response:
    """One volume of a package under its content hash (a hash that is not the file's is a stale URL: 404)."""
    state = state_of(request)
    if name not in VOLUMES:
        raise HTTPException(404, f"unknown volume {name!r}; a package serves {sorted(VOLUMES)}")
    package = package_or_404(state, case_id, package_id)
    path = package.folder / VOLUMES[name]
    actual = await anyio.to_thread.run_sync(state.sha256, path)
    if sha != actual:
        raise HTTPException(404, f"{case_id} {package_id} {name}: no such version (sha256 {sha[:16]}...); reopen the case")
    return _send_nifti(request, path, actual, name)


@lru_cache(maxsize=16)
def _regions(folder: str, mtime_ns: int, table: OrganTable, organs_to_fix: tuple[str, ...]) -> bytes:
    import json

    import nibabel as nib
    import numpy as np

    att = nib.load(str(Path(folder) / "attention.nii.gz"))
    pseudo = np.asanyarray(nib.load(str(Path(folder) / "pseudo_label.nii.gz")).dataobj)
    regions = attention_regions(np.asanyarray(att.dataobj), pseudo, att.affine, table, organs_to_fix) or organ_regions(pseudo, att.affine, table, organs_to_fix)
    return json.dumps({"organs_to_fix": list(organs_to_fix), "count": len(regions), "regions": [r.as_dict() for r in regions]}).encode()


def package_regions(state, package: WorkPackage) -> bytes:
    """The package's attention regions as JSON, computed once per package (their files never change)."""
    folder = package.folder
    return _regions(str(folder), (folder / "attention.nii.gz").stat().st_mtime_ns, state.settings.campaign.organ_table, tuple(package.organs_to_fix))


@router.get("/cases/{case_id}/{package_id}/regions")
async def regions(case_id: str, package_id: str, request: Request, who: str = Depends(annotator)) -> Response:
    """The attention regions to jump through, in order (organs to fix first, then by size), each with its organ and mL."""
    state = state_of(request)
    package = package_or_404(state, case_id, package_id)
    return Response(await anyio.to_thread.run_sync(package_regions, state, package), media_type="application/json")


@router.get("/slicer/{image_id}/{name}")
def slicer_file(image_id: str, name: str, request: Request) -> Response:
    """3D Slicer's URL handler downloads with no token: the id's capability stands in for it (as for ``/datastore/image``)."""
    state = state_of(request)
    try:
        ref = parse_image_id(image_id)
    except BadId as exc:
        raise HTTPException(400, str(exc)) from None
    if not capability_ok(state.key, ref):
        raise HTTPException(401, "this link needs the capability the worklist put in it; open the case from the worklist again")
    if name not in SLICER_FILES:
        raise HTTPException(404, f"unknown file {name!r}; 3D Slicer's link serves {sorted(SLICER_FILES)}")
    package = package_or_404(state, ref.case_id, ref.package_id)
    path = package.folder / SLICER_FILES[name]
    if name.endswith(".nii"):
        return _send_nifti(request, path, state.sha256(path), f"{package.case_id}_{package.package_id}.nii")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{package.case_id}_{package.package_id}.seg.nrrd")


__all__ = ["MIN_COLOR_DISTANCE", "SLICER_FILES", "VIEWER_COLORS", "VOLUMES", "WINDOWS", "legend", "package_regions", "router"]
