"""Work packages: what an annotator opens for one queued case.

One folder per (round, case), all on the case's ORIGINAL grid so everything
overlays the CT exactly:

- ``image.nii.gz``: the CT (int16 HU);
- ``pseudo_label.nii.gz``: the label to revise (organ-table values), with
  ``pseudo_label.seg.nrrd`` (3D Slicer segmentation: named, coloured segments),
  ``pseudo_label.ctbl`` (Slicer colour table) and ``pseudo_label.itksnap.txt``
  (ITK-SNAP label descriptions) so viewers show organs by name;
- ``attention.nii.gz``: the attention heatmap (max over organs, 0..255);
- ``preview.png``; ``task.json``: case, round, organs to fix in order, how to submit.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from alqa_core.io.atomic import atomic_write_bytes, atomic_write_text
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


def slicer_seg_nrrd(label: LabelMap, table: OrganTable) -> bytes:
    """A 3D Slicer ``.seg.nrrd`` (one labelmap layer) with a named segment per organ.

    Hand-written: the format is a short text header plus gzip data, and no
    maintained NRRD writer is among alqa's dependencies. Slicer's keys
    (``SegmentN_Name``, ``_LabelValue``, ``_Color``, ``_Layer``, ``_Extent``) follow
    its segmentation file format documentation.
    """
    arr = np.asarray(label.array).astype(np.uint8)
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(label.affine)[:3, :]
    dirs = " ".join("(" + ",".join(f"{v:.10g}" for v in lps[:, i]) + ")" for i in range(3))
    origin = "(" + ",".join(f"{v:.10g}" for v in lps[:, 3]) + ")"
    nx, ny, nz = arr.shape
    header = [
        "NRRD0004",
        "type: unsigned char",
        "dimension: 3",
        "space: left-posterior-superior",
        f"sizes: {nx} {ny} {nz}",
        f"space directions: {dirs}",
        "kinds: domain domain domain",
        "encoding: gzip",
        f"space origin: {origin}",
        "Segmentation_MasterRepresentation:=Binary labelmap",
        "Segmentation_ContainedRepresentationNames:=Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset:=0 0 0",
    ]
    # every organ gets a segment, empty ones too: the annotator may need to draw a missed organ
    for n, (i, o) in enumerate(enumerate(table.organs)):
        r, g, b = organ_color(o.name, i)
        header += [
            f"Segment{n}_ID:={o.name}",
            f"Segment{n}_Name:={o.name}",
            f"Segment{n}_Color:={r / 255:.4f} {g / 255:.4f} {b / 255:.4f}",
            f"Segment{n}_LabelValue:={o.value}",
            f"Segment{n}_Layer:=0",
            f"Segment{n}_Extent:=0 {nx - 1} 0 {ny - 1} 0 {nz - 1}",
        ]
    # NRRD stores the fastest axis first: Fortran order of the (i, j, k) array
    data = gzip.compress(np.asfortranarray(arr).tobytes(order="F"), compresslevel=1)
    return ("\n".join(header) + "\n\n").encode("ascii") + data


def write_work_package(
    folder: Path,
    case_id: str,
    round_index: int,
    ct: CTVolume,
    pseudo: LabelMap,
    attention: np.ndarray,
    organs_to_fix: tuple[str, ...],
    table: OrganTable,
    campaign_hint: str = "",
) -> WorkPackage:
    """Write one work package; ``attention`` is (C, i, j, k) uint8 on the CT grid, C = table organs."""
    folder = Path(folder)
    if not pseudo.grid.matches(ct.grid) or tuple(attention.shape[1:]) != tuple(ct.shape):
        raise ValueError(f"{case_id}: the pseudo label and attention must be on the CT's grid")
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat()
    arr = np.asarray(ct.array)
    write_nifti(folder / "image.nii.gz", np.clip(np.rint(arr), -32768, 32767).astype(np.int16), ct.affine)
    write_nifti(folder / "pseudo_label.nii.gz", np.asarray(pseudo.array).astype(np.uint8), pseudo.affine)
    heat = np.asarray(attention).max(axis=0) if attention.shape[0] else np.zeros(ct.shape, np.uint8)
    write_nifti(folder / "attention.nii.gz", heat.astype(np.uint8), ct.affine)
    atomic_write_bytes(folder / "pseudo_label.seg.nrrd", slicer_seg_nrrd(pseudo, table))
    atomic_write_text(folder / "pseudo_label.ctbl", slicer_color_table(table))
    atomic_write_text(folder / "pseudo_label.itksnap.txt", itksnap_label_description(table))
    atomic_write_bytes(
        folder / "preview.png", render_overview(arr, ct.affine, table, np.asarray(pseudo.array), heat.astype(np.float32) / 255.0)
    )
    task = {
        "case_id": case_id,
        "round": int(round_index),
        "created_at": created,
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
            "revision": f"{campaign_hint}alqa submit {case_id} --label <revised.nii.gz> --annotator <your name>",
            "no_revision_needed": f"{campaign_hint}alqa confirm {case_id} --annotator <your name>",
            "rules": "Keep the image grid (save the label over image.nii.gz's geometry), integer organ values from "
            "'labels'; to remove an organ entirely add --emptied <organ>.",
        },
    }
    atomic_write_text(folder / "task.json", json.dumps(task, indent=1))
    return WorkPackage(folder, case_id, int(round_index), tuple(organs_to_fix), created)
