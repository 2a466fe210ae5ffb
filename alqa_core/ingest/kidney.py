"""A generic ``kidney`` label split into the patient's right and left kidney, at ingest.

Some sources label both kidneys with one value. :func:`split_kidney` splits
such a mask; world coordinates follow nibabel's RAS+
(``nibabel.orientations.ornt2axcodes``: the x axis runs from L to R), so the
patient's right kidney has the LARGER world x, whatever the voxel axes'
orientation (RAS, LPS, ...).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from alqa_core.organs import ClassMap, OrganTable, remap_labels
from alqa_core.volume import LabelMap

#: Names a source may use for both kidneys in one label.
GENERIC_KIDNEY_NAMES = ("kidney", "kidneys")


def _world_x_mm(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """RAS x (mm) of voxel indices ``index`` (shape (n, 3))."""
    a = np.asarray(affine, dtype=np.float64)
    return index @ a[0, :3] + a[0, 3]


def split_kidney(
    mask: np.ndarray,
    affine: np.ndarray,
    body_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a both-kidneys mask into ``(right, left)`` (the patient's sides).

    Midline (a world x in mm): the x centroid of ``body_mask`` when given;
    else halfway between the x centroids of the two largest connected
    components (26-connectivity); with a single component and no body mask,
    the x centre of the field of view (CT fields of view are centred on the
    body). Each component that lies wholly on one side of the midline goes
    to that side whole; a component straddling it (a horseshoe kidney) is cut
    voxel-wise at the midline. RAS+: larger x is the patient's right.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"split_kidney needs a 3D mask, got shape {m.shape}")
    right = np.zeros(m.shape, dtype=bool)
    left = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return right, left
    components, n = ndimage.label(m, structure=ndimage.generate_binary_structure(3, 3))
    index = np.argwhere(m)
    x = _world_x_mm(affine, index.astype(np.float64))
    comp_of = components[m]  # same (C) order as argwhere

    if body_mask is not None:
        body = np.asarray(body_mask, dtype=bool)
        if body.shape != m.shape or not body.any():
            raise ValueError(f"body_mask must be a non-empty mask of shape {m.shape}, got {body.shape}")
        midline = float(_world_x_mm(affine, np.argwhere(body).astype(np.float64)).mean())
    elif n >= 2:
        sizes = np.bincount(comp_of, minlength=n + 1)
        largest = np.argsort(sizes[1:])[::-1][:2] + 1
        sums = np.bincount(comp_of, weights=x, minlength=n + 1)
        midline = float(np.mean(sums[largest] / sizes[largest]))
    else:
        centre = (np.asarray(m.shape, dtype=np.float64) - 1.0) / 2.0
        midline = float(_world_x_mm(affine, centre[None, :])[0])

    is_right = x > midline
    right_count = np.bincount(comp_of, weights=is_right, minlength=n + 1)
    total = np.bincount(comp_of, minlength=n + 1)
    whole_right = right_count == total  # per component
    whole_left = right_count == 0
    voxel_right = np.where(whole_right[comp_of], True, np.where(whole_left[comp_of], False, is_right))
    ii, jj, kk = index.T
    right[ii[voxel_right], jj[voxel_right], kk[voxel_right]] = True
    left[ii[~voxel_right], jj[~voxel_right], kk[~voxel_right]] = True
    return right, left


def split_kidney_values(
    labels: np.ndarray,
    affine: np.ndarray,
    kidney_value: int,
    right_value: int,
    left_value: int,
    body_mask: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``labels`` with ``kidney_value`` replaced by right/left values."""
    arr = np.asarray(labels)
    right, left = split_kidney(arr == kidney_value, affine, body_mask)
    out = arr.copy()
    out[right] = right_value
    out[left] = left_value
    return out


def remap_labels_splitting_kidney(
    label: LabelMap,
    class_map: ClassMap,
    table: OrganTable,
    body_mask: np.ndarray | None = None,
) -> LabelMap:
    """Remap a source label onto ``table``, splitting a generic ``kidney``.

    Like :func:`alqa_core.organs.remap_labels`, plus: source values the class
    map names ``kidney``/``kidneys`` become the table's ``kidney_right`` and
    ``kidney_left`` via :func:`split_kidney`. Returns a LabelMap in
    organ-table numbering on the same grid.
    """
    source = np.asarray(label.array)
    out = remap_labels(source, class_map, table).array.copy()
    generic = [v for v, name in class_map.source_to_organ.items() if name in GENERIC_KIDNEY_NAMES]
    if generic:
        right, left = split_kidney(np.isin(source, generic), label.affine, body_mask)
        out[right] = table.value_of("kidney_right")
        out[left] = table.value_of("kidney_left")
    return LabelMap(out, label.affine)
