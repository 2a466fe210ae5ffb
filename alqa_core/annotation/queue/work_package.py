"""Work packages: what an annotator opens for one queued case, one immutable folder per version.

A version is named ``r<round>-<content hash>`` (``work_packages/<case>/<id>/``):
a new queue writes a new version, an identical one is reused, and nothing in a
written version ever changes. Everything lies on the case's ORIGINAL grid so
it overlays the CT exactly:

- ``image.nii.gz``: the CT (int16 HU);
- ``pseudo_label.nii.gz``: the label to revise (organ-table values), with
  ``pseudo_label.seg.nrrd`` (3D Slicer segmentation: named, coloured segments),
  ``pseudo_label.ctbl`` (Slicer colour table) and ``pseudo_label.itksnap.txt``
  (ITK-SNAP label descriptions) so viewers show organs by name;
- ``attention.nii.gz``: the attention heatmap (max over organs, 0..255);
- ``preview.png``; ``task.json``: case, round, package id, the pseudo label's sha256,
  organs to fix in order, how to submit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_folder, atomic_path, atomic_write_bytes, atomic_write_text
from alqa_core.io.hashing import file_sha256
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import OrganTable
from alqa_core.render import organ_color, render_overview
from alqa_core.volume import CTVolume, LabelMap


@dataclass(frozen=True)
class WorkPackage:
    folder: Path
    case_id: str
    round_index: int
    organs_to_fix: tuple[str, ...]
    created_at: str
    package_id: str
    pseudo_label_sha256: str

    @property
    def pseudo_label_path(self) -> Path:
        return self.folder / "pseudo_label.nii.gz"


def slicer_color_table(table: OrganTable) -> str:
    """3D Slicer ``.ctbl``: ``value name R G B A`` per line."""
    lines = ["# alqa organ table", "0 background 0 0 0 0"]
    lines += [f"{o.value} {o.name} {' '.join(map(str, organ_color(o.name, i)))} 255" for i, o in enumerate(table.organs)]
    return "\n".join(lines) + "\n"


def itksnap_label_description(table: OrganTable) -> str:
    """ITK-SNAP label description file (Segmentation > Import Label Descriptions)."""
    lines = ['    0     0    0    0        0  0  0    "Clear Label"']
    for i, o in enumerate(table.organs):
        r, g, b = organ_color(o.name, i)
        lines.append(f'{o.value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{o.name}"')
    return "################################################\n# ITK-SnAP Label Description File (alqa)\n" + "\n".join(lines) + "\n"


def slicer_seg_nrrd(label: LabelMap, table: OrganTable, path: Path) -> Path:
    """Write a 3D Slicer ``.seg.nrrd`` (one labelmap layer) with a named, coloured segment per organ, atomically.

    Written with ``slicerio`` (3D Slicer's own reader/writer of segmentation
    files). Every organ gets a segment, empty ones too: the annotator may need
    to draw a missed organ. Values stay the organ table's.
    """
    import slicerio

    arr = np.asarray(label.array).astype(np.uint8)
    segments = []
    for i, o in enumerate(table.organs):
        r, g, b = organ_color(o.name, i)
        mask = np.nonzero(arr == o.value)
        extent = [int(v) for axis in mask for v in (axis.min(), axis.max())] if mask[0].size else [0, -1, 0, -1, 0, -1]
        segments.append({"id": o.name, "name": o.name, "color": [r / 255, g / 255, b / 255], "labelValue": int(o.value), "layer": 0, "extent": extent})
    segmentation = {
        "voxels": arr,
        "ijkToLPS": np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(label.affine, dtype=np.float64),
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": segments,
    }
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation, compression_level=1)
    return path


def package_content_sha256(round_index: int, pseudo: LabelMap, heat: np.ndarray, organs_to_fix: tuple[str, ...]) -> str:
    """What makes a package version: its round, pseudo label (voxels and geometry), attention and organs to fix."""
    h = hashlib.sha256(f"round {int(round_index)}; organs {','.join(organs_to_fix)}; shape {tuple(pseudo.shape)}".encode())
    h.update(np.ascontiguousarray(np.asarray(pseudo.affine, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(pseudo.array, dtype=np.uint8)).tobytes())
    h.update(np.ascontiguousarray(heat.astype(np.uint8)).tobytes())
    return h.hexdigest()


def read_work_package(folder: Path) -> WorkPackage:
    """A written package, from its ``task.json``."""
    folder = Path(folder)
    try:
        task = json.loads((folder / "task.json").read_text())
        return WorkPackage(folder, task["case_id"], int(task["round"]), tuple(task["organs_to_fix"]), task["created_at"], task["package_id"], task["pseudo_label_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlqaInputError(folder / "task.json", f"not a readable work package ({exc})") from exc


def write_work_package(
    packages: Path,
    case_id: str,
    round_index: int,
    ct: CTVolume,
    pseudo: LabelMap,
    attention: np.ndarray,
    organs_to_fix: tuple[str, ...],
    table: OrganTable,
    campaign_hint: str = "",
) -> WorkPackage:
    """Write one package version under ``packages`` (the case's folder); an identical version is reused, never rewritten.

    ``attention`` is (C, i, j, k) uint8 on the CT grid, C = table organs. The
    version's folder appears whole (written in a hidden folder, then renamed),
    and once written it is never changed: an annotator may be editing it.
    """
    if not pseudo.grid.matches(ct.grid) or tuple(attention.shape[1:]) != tuple(ct.shape):
        raise ValueError(f"{case_id}: the pseudo label and attention must be on the CT's grid")
    heat = np.asarray(attention).max(axis=0) if attention.shape[0] else np.zeros(ct.shape, np.uint8)
    organs_to_fix = tuple(organs_to_fix)
    package_id = f"r{int(round_index):03d}-{package_content_sha256(round_index, pseudo, heat, organs_to_fix)[:12]}"
    final = Path(packages) / package_id
    if (final / "task.json").exists():
        return read_work_package(final)
    try:
        with atomic_folder(final) as folder:
            _write_files(folder, case_id, round_index, package_id, ct, pseudo, heat, organs_to_fix, table, campaign_hint)
    except FileExistsError:  # written meanwhile by another run: the same content by construction
        pass
    return read_work_package(final)


def _write_files(folder, case_id, round_index, package_id, ct, pseudo, heat, organs_to_fix, table, campaign_hint) -> None:
    created = datetime.now(timezone.utc).isoformat()
    arr = np.asarray(ct.array)
    write_nifti(folder / "image.nii.gz", np.clip(np.rint(arr), -32768, 32767).astype(np.int16), ct.affine)
    pseudo_path = write_nifti(folder / "pseudo_label.nii.gz", np.asarray(pseudo.array).astype(np.uint8), pseudo.affine)
    write_nifti(folder / "attention.nii.gz", heat.astype(np.uint8), ct.affine)
    slicer_seg_nrrd(pseudo, table, folder / "pseudo_label.seg.nrrd")
    atomic_write_text(folder / "pseudo_label.ctbl", slicer_color_table(table))
    atomic_write_text(folder / "pseudo_label.itksnap.txt", itksnap_label_description(table))
    atomic_write_bytes(
        folder / "preview.png", render_overview(arr, ct.affine, table, np.asarray(pseudo.array), heat.astype(np.float32) / 255.0)
    )
    task = {
        "case_id": case_id,
        "round": int(round_index),
        "package_id": package_id,
        "created_at": created,
        "pseudo_label_sha256": file_sha256(pseudo_path),
        "organs_to_fix": list(organs_to_fix),
        "files": {
            "image": "image.nii.gz",
            "pseudo_label": "pseudo_label.nii.gz",
            "slicer_segmentation": "pseudo_label.seg.nrrd",
            "attention": "attention.nii.gz",
            "preview": "preview.png",
        },
        "labels": table.to_mapping(),
        "how_to_submit": {
            "revision": f"{campaign_hint}alqa submit {case_id} --package {package_id} --label <revised .nii.gz or .seg.nrrd> --annotator <your name>",
            "no_revision_needed": f"{campaign_hint}alqa confirm {case_id} --package {package_id} --annotator <your name>",
            "rules": "Keep the image grid (save the label over image.nii.gz's geometry), organs named as in 'labels' "
            "(segment names in a .seg.nrrd, or these values in a NIfTI); to remove an organ entirely add --emptied <organ>.",
        },
    }
    atomic_write_text(folder / "task.json", json.dumps(task, indent=1))
