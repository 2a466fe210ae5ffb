"""The files the server hands out: package images and pseudo labels, MONAI Label's multipart infer answer, package zips.

Label files go out with values 1..N in organ-table order, as 3D Slicer's
MONAI Label module imports them (:mod:`alqa_core.annotation.intake.segments`): for
the default table that is the file itself, byte for byte; otherwise a
remapped copy made in memory (never written to the workspace).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from alqa_core.annotation.queue.packages import package_of as answered_package
from alqa_core.annotation.intake.segments import is_positional, positional_names, to_positional
from alqa_core.annotation.queue.work_package import WorkPackage
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.rounds import current_round
from alqa_dagster.serve.ids import ImageRef
from alqa_dagster.serve.state import ServeState

#: the one "model" alqa offers MONAI Label clients: the ensemble's pseudo label
MODEL = "alqa_ensemble"


def package_of(state: ServeState, ref: ImageRef) -> WorkPackage | None:
    """The package an id names, or the case's newest when it names none (None: the case was never queued)."""
    try:
        return answered_package(state.layout, ref.case_id, ref.package_id or None)
    except AlqaInputError as exc:
        raise HTTPException(404, f"{ref.case_id}: {exc.reason}") from exc


def image_file_name(package: WorkPackage) -> str:
    """Unique per case AND package version, with the right extension: 3D Slicer caches downloads by this name."""
    return f"{package.case_id}_{package.package_id}.nii.gz"


@dataclass(frozen=True)
class LabelSource:
    path: Path
    name: str  # the file name clients see
    case_id: str
    package_id: str
    round_index: int


def pseudo_label_source(state: ServeState, ref: ImageRef) -> LabelSource:
    """The package's pseudo label; for a case never queued, the current round's pseudo label of it."""
    package = package_of(state, ref)
    if package is not None:
        return LabelSource(package.pseudo_label_path, f"{package.case_id}_{package.package_id}_pseudo_label.nii.gz", package.case_id, package.package_id, package.round_index)
    t = current_round(state.catalog)
    path = state.layout.pseudo_label(ref.case_id, t) if t >= 0 else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"case {ref.case_id} has no work package and no pseudo label in round {t}")
    return LabelSource(path, f"{ref.case_id}_round{t:03d}_pseudo_label.nii.gz", ref.case_id, "", t)


@lru_cache(maxsize=8)
def _positional_bytes(path: str, mtime_ns: int, table: OrganTable) -> bytes:
    import nibabel as nib
    import numpy as np

    img = nib.load(path)
    arr = to_positional(np.asanyarray(img.dataobj), table)
    out = nib.Nifti1Image(arr, img.affine)
    out.set_data_dtype(np.uint8)
    return gzip.compress(out.to_bytes(), compresslevel=1)


def label_bytes(source: LabelSource, table: OrganTable) -> bytes:
    if is_positional(table):
        return source.path.read_bytes()
    return _positional_bytes(str(source.path), source.path.stat().st_mtime_ns, table)


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def label_response(source: LabelSource, table: OrganTable) -> Response:
    if is_positional(table):
        return FileResponse(source.path, media_type="application/gzip", filename=source.name)
    return Response(label_bytes(source, table), media_type="application/gzip", headers=attachment(source.name))


def infer_response(source: LabelSource, table: OrganTable, model: str) -> Response:
    """MONAI Label's infer answer: a fixed-length multipart body with ``params`` (JSON) and the label file.

    Fixed length, not streamed: the client parses the raw socket with
    ``cgi.FieldStorage``, and a chunked body corrupts the file it saves.
    """
    params = {
        "label_names": positional_names(table),
        "model": model,
        "alqa": {"case_id": source.case_id, "package_id": source.package_id, "round": source.round_index},
    }
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\nContent-Type: application/json\r\n\r\n"
        f"{json.dumps(params)}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{source.name}\"\r\n"
        "Content-Type: application/gzip\r\n\r\n"
    ).encode()
    body = head + label_bytes(source, table) + f"\r\n--{boundary}--\r\n".encode()
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}")


def package_zip(package: WorkPackage) -> FileResponse:
    """The package folder as a zip (stored: its volumes are gzip already), removed once sent."""
    fd, tmp = tempfile.mkstemp(prefix="alqa-package-", suffix=".zip")
    os.close(fd)
    root = f"{package.case_id}_{package.package_id}"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(package.folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                zf.write(path, f"{root}/{path.name}")
    return FileResponse(tmp, media_type="application/zip", filename=f"{root}.zip", background=BackgroundTask(os.unlink, tmp))
