"""MONAI Label's label names and values, mapped to and from the organ table BY NAME.

3D Slicer's MONAI Label module imports a label file by position: with label
names ``[n_1, ..., n_N]`` (``label_names`` of ``/datastore`` or ``/infer``), the
voxels of value ``i`` become segment ``n_i`` (Slicer's
``ImportLabelmapToSegmentationNode`` with segment ids). So what the server
hands out carries values 1..N in organ-table order (:func:`positional_names`,
:func:`to_positional`); for the default table these are the organ values
themselves and files go out byte for byte.

On "Submit label" the module sends ``label_info`` ``[{name, idx}]`` with the
file. Its exported labelmap numbers the exported segments 1..N in that
list's order, while ``idx`` counts every segment of the scene, the skipped
``background`` and scribbles included: the two agree unless a skipped
segment came first. :func:`segments_from_label_info` takes ``idx`` as the
value (what other MONAI Label clients mean), and falls back to the list
position only when the file's values show that ``idx`` cannot be right and
positions can. Names are never assumed from values; a name the organ table
does not know is passed on, and the submissions sensor refuses it by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable, canonical_organ_name

#: segments 3D Slicer's module never exports (its own skip list)
SKIPPED_SEGMENTS = ("background", "foreground_scribbles", "background_scribbles")


def positional_names(table: OrganTable) -> dict[str, int]:
    """``label_names`` for MONAI Label clients: organ -> 1..N in organ-table order."""
    return {o.name: i + 1 for i, o in enumerate(table.organs)}


def is_positional(table: OrganTable) -> bool:
    """Whether the organ values are already 1..N (then files go out unchanged)."""
    return table.values == tuple(range(1, len(table) + 1))


def to_positional(array: np.ndarray, table: OrganTable) -> np.ndarray:
    """Organ-table values -> 1..N in table order (values outside the table become 0); the input is not changed."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, o in enumerate(table.organs):
        lut[o.value] = i + 1
    arr = np.asarray(array)
    return lut[np.clip(arr, 0, 255).astype(np.uint8)]


def parse_label_info(label_info: object, where: str | Path | None = None) -> list[tuple[str, int]]:
    """``[{name, idx}]`` -> ``[(name, idx)]`` in list order, skipped segments dropped; AlqaInputError when malformed."""
    if label_info is None:
        return []
    if not isinstance(label_info, Sequence) or isinstance(label_info, (str, bytes)):
        raise AlqaInputError(where, f"label_info must be a list of {{name, idx}}, got {type(label_info).__name__}")
    out = []
    for k, item in enumerate(label_info):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise AlqaInputError(where, f"label_info[{k}] must be {{'name': str, 'idx': int}}, got {item!r}")
        if canonical_organ_name(item["name"]) in SKIPPED_SEGMENTS:
            continue
        idx = item.get("idx", item.get("id"))
        if isinstance(idx, bool) or not isinstance(idx, int) or not 1 <= idx <= 255:
            raise AlqaInputError(where, f"label_info[{k}] ({item['name']!r}): idx must be an integer 1..255, got {idx!r}")
        out.append((item["name"], idx))
    values = [v for _, v in out]
    if len(set(values)) != len(values):
        raise AlqaInputError(where, f"label_info gives one idx to several segments: {out}")
    return out


def segments_from_label_info(label_info: object, present_values: Iterable[int] | None = None, where: str | Path | None = None) -> dict[int, str]:
    """File value -> segment name, from MONAI Label's ``label_info`` (see the module doc for idx vs position)."""
    pairs = parse_label_info(label_info, where)
    by_idx = {idx: name for name, idx in pairs}
    by_position = {k + 1: name for k, (name, _) in enumerate(pairs)}
    if by_idx == by_position or present_values is None:
        return by_idx
    present = {int(v) for v in present_values if int(v) != 0}
    if present <= set(by_idx):
        return by_idx
    if present <= set(by_position):
        return by_position
    return by_idx  # neither names every value: the sensor refuses it, naming the unnamed values


def needs_values(label_info: object) -> bool:
    """Whether idx and list position disagree, so the file's values decide (:func:`segments_from_label_info`)."""
    pairs = parse_label_info(label_info)
    return any(idx != k + 1 for k, (_, idx) in enumerate(pairs))


def label_values(path: str | Path) -> set[int]:
    """The values present in a NIfTI or NRRD label map (read whole; only when :func:`needs_values`)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii.gz", ".nii")):
            import nibabel as nib

            array = np.asanyarray(nib.load(str(path)).dataobj)
        elif name.endswith(".nrrd"):
            import nrrd

            array, _ = nrrd.read(str(path))
        else:
            raise AlqaInputError(path, "not a NIfTI or NRRD label map")
    except AlqaInputError:
        raise
    except Exception as exc:  # nibabel/pynrrd raise many types on damaged files
        raise AlqaInputError(path, f"unreadable label file ({exc})") from exc
    return {int(v) for v in np.unique(array)}


__all__ = [
    "SKIPPED_SEGMENTS",
    "is_positional",
    "label_values",
    "needs_values",
    "parse_label_info",
    "positional_names",
    "segments_from_label_info",
    "to_positional",
]
