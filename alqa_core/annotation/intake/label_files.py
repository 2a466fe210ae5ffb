"""Submitted label files read into organ-table values: NIfTI, NRRD label maps and 3D Slicer ``.seg.nrrd``.

Values are mapped to organs by NAME, never by assuming numbers:

- a ``.seg.nrrd`` names its segments in the header (3D Slicer's
  ``SegmentN_Name`` / ``_LabelValue`` / ``_Layer``, read with ``slicerio``);
  segments in several layers (overlapping segments) are collapsed, and a
  voxel claimed by two organs is refused;
- any file may come with ``segments`` ({file value: organ name}), as MONAI
  Label's "Submit label" sends them (``label_info``); 
- a NIfTI or NRRD label map without names holds organ-table values.

Names go through :func:`alqa_core.organs.canonical_organ_name` (so
``gall_bladder`` and ``Gallbladder`` are the gallbladder). A name the organ
table does not know is an error naming the file and the names.

3D Slicer may save a ``.seg.nrrd`` cropped to the segments' extent: such a
segmentation whose grid is an integer-offset block of the reference grid
(same voxel axes and spacing) is placed back on the reference grid, zero
elsewhere. Any other file must lie on the case's grid (the validation checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import integral_labels, read_label
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import Grid, LabelMap

#: label file types an annotator may hand in, longest suffix first
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: voxel-centre tolerance when placing a cropped label back on its reference grid
_OFFSET_TOL_VOX = 1e-3


def label_suffix(path: str | Path) -> str:
    """The file's label type suffix; an AlqaInputError for anything else."""
    name = Path(path).name.lower()
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise AlqaInputError(path, f"not a label file alqa reads: expected one of {', '.join(LABEL_SUFFIXES)}")


def _organ_value(name: str, table: OrganTable, path) -> int:
    organ = canonical_organ_name(str(name))
    if organ in ("background", "clear_label", ""):
        return 0
    if organ not in table.names:
        raise AlqaInputError(path, f"segment {name!r} is not an organ of the table {list(table.names)}")
    return table.value_of(organ)


def _remap(array: np.ndarray, names: Mapping[int, str], table: OrganTable, path) -> np.ndarray:
    """File values -> organ values by name; a value with voxels but no name is refused."""
    lut = {int(v): _organ_value(n, table, path) for v, n in names.items()}
    present = [int(v) for v in np.unique(array) if v != 0]
    unnamed = [v for v in present if v not in lut]
    if unnamed:
        raise AlqaInputError(path, f"label values {unnamed} have voxels but no segment name (named: {sorted(lut)})")
    out = np.zeros(array.shape, dtype=np.uint8)
    for v in present:
        out[array == v] = lut[v]
    return out


def _as_organ_values(array: np.ndarray, path) -> np.ndarray:
    """An unnamed label map's values as uint8 (the validation then checks they are organ-table values)."""
    top, low = int(array.max(initial=0)), int(array.min(initial=0))
    if top > 255 or low < 0:
        raise AlqaInputError(path, f"label values span {low}..{top}; organ-table values are 0..255")
    return array.astype(np.uint8)


def _from_seg_nrrd(path: Path, table: OrganTable, names: Mapping[int, str] | None) -> tuple[np.ndarray, np.ndarray]:
    import slicerio  # numpy + pynrrd: light

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio/pynrrd raise IOError, NRRDError, ValueError on damaged files
        raise AlqaInputError(path, f"unreadable NRRD segmentation ({exc})") from exc
    voxels = np.asarray(seg["voxels"])
    affine = LPS_TO_RAS @ np.asarray(seg["ijkToLPS"], dtype=np.float64)
    segments = seg.get("segments") or []
    if names is not None or not segments or not any("name" in s for s in segments):
        if voxels.ndim != 3:
            raise AlqaInputError(path, f"a label map must be 3D, got shape {voxels.shape}")
        array = integral_labels(voxels, path)
        return (_as_organ_values(array, path) if names is None else _remap(array, names, table, path)), affine
    layers = voxels if voxels.ndim == 4 else voxels[np.newaxis]
    out = np.zeros(layers.shape[1:], dtype=np.uint8)
    claimed = np.zeros(layers.shape[1:], dtype=bool)
    for s in segments:
        value = _organ_value(s.get("name", s.get("id", "")), table, path)
        mask = layers[int(s.get("layer", 0))] == int(s.get("labelValue", 1))
        if value == 0 or not mask.any():
            continue
        clash = claimed & mask & (out != value)
        if clash.any():
            raise AlqaInputError(path, f"segment {s.get('name')!r} overlaps another organ in {int(clash.sum())} voxels")
        out[mask], claimed[mask] = value, True
    return out, affine


def _on_reference(array: np.ndarray, affine: np.ndarray, reference: Grid | None) -> tuple[np.ndarray, np.ndarray]:
    """A cropped label (same axes and spacing, integer voxel offset inside the reference) padded onto the reference."""
    if reference is None or Grid(array.shape, affine).matches(reference):
        return array, affine
    ref = np.asarray(reference.affine, dtype=np.float64)
    if not np.allclose(affine[:3, :3], ref[:3, :3], atol=1e-4):
        return array, affine
    offset = np.linalg.solve(ref[:3, :3], affine[:3, 3] - ref[:3, 3])
    start = np.rint(offset).astype(int)
    end = start + np.asarray(array.shape)
    if np.abs(offset - start).max() > _OFFSET_TOL_VOX or (start < 0).any() or (end > np.asarray(reference.shape)).any():
        return array, affine
    out = np.zeros(tuple(reference.shape), dtype=array.dtype)
    out[start[0]:end[0], start[1]:end[1], start[2]:end[2]] = array
    return out, ref


def read_submitted_label(
    path: str | Path, table: OrganTable, segments: Mapping[int, str] | None = None, reference: Grid | None = None
) -> LabelMap:
    """The label an annotator handed in, in organ-table values (on ``reference`` when it was saved cropped)."""
    path = Path(path)
    suffix = label_suffix(path)
    names = None if segments is None else {int(k): str(v) for k, v in segments.items()}
    if suffix in (".nii.gz", ".nii"):
        label = read_label(path)
        array = _as_organ_values(np.asarray(label.array), path) if names is None else _remap(np.asarray(label.array), names, table, path)
        affine = np.asarray(label.affine, dtype=np.float64)
    else:
        array, affine = _from_seg_nrrd(path, table, names)
        if suffix == ".seg.nrrd":  # Slicer crops a segmentation to its extent; a NIfTI or plain NRRD must be on the grid
            array, affine = _on_reference(array, affine, reference)
    # contiguous in either order: NIfTI's arrays come Fortran-ordered, and reordering a 512x512x300
    # label into C order cost 1 s of a submissions tick for nothing downstream needs
    contiguous = array.flags.c_contiguous or array.flags.f_contiguous
    return LabelMap(array if contiguous else np.ascontiguousarray(array), affine)


__all__ = ["LABEL_SUFFIXES", "label_suffix", "read_submitted_label"]
