"""Pictures for people: an axial CT slice with organs and attention overlaid.

Slices are shown in the radiological convention (patient's right on the
image's left, anterior at the top), whatever the volume's orientation, by
reorienting to RAS first. Colours are a table (TotalSegmentator / 3D Slicer
style), the same one the work packages' colour tables use.
"""

from __future__ import annotations

import io
from types import MappingProxyType
from typing import Mapping

import nibabel as nib
import numpy as np
from PIL import Image

from alqa_core.organs import OrganTable

#: organ name -> RGB, as 3D Slicer's generic anatomy colours.
ORGAN_COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "spleen": (157, 108, 162),
        "kidney_right": (185, 102, 83),
        "kidney_left": (185, 102, 83),
        "gallbladder": (139, 150, 98),
        "liver": (221, 130, 101),
        "stomach": (216, 132, 105),
        "aorta": (224, 97, 76),
        "inferior_vena_cava": (0, 151, 206),
        "pancreas": (249, 180, 111),
    }
)
_FALLBACK = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def organ_color(name: str, index: int = 0) -> tuple[int, int, int]:
    return ORGAN_COLORS.get(name, _FALLBACK[index % len(_FALLBACK)])


def color_lut(table: OrganTable) -> np.ndarray:
    """(max_value + 1, 3) uint8: label value -> RGB (background black)."""
    lut = np.zeros((table.max_value + 1, 3), dtype=np.uint8)
    for i, organ in enumerate(table.organs):
        lut[organ.value] = organ_color(organ.name, i)
    return lut


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def ras_spacing_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along R, A, S after reorienting a volume with ``affine`` to RAS."""
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    out = np.zeros(3)
    out[ornt[:, 0].astype(int)] = spacing
    return tuple(float(v) for v in out)


def _display(slice_xy: np.ndarray) -> np.ndarray:
    # RAS [x, y] -> image [row = anterior..posterior, col = patient right..left]
    return np.ascontiguousarray(slice_xy[::-1, ::-1].T)


def pick_slice(label: np.ndarray | None, heat: np.ndarray | None, n_slices: int) -> int:
    """The axial slice with the most attention, else the most organ voxels, else the middle."""
    for vol in (heat, label):
        if vol is not None and np.any(vol):
            axes = tuple(range(vol.ndim - 1))
            return int(np.argmax(np.count_nonzero(vol, axis=axes) if vol.dtype == bool else vol.sum(axis=axes, dtype=np.float64)))
    return n_slices // 2


def render_overview(
    ct_hu: np.ndarray,
    affine: np.ndarray,
    table: OrganTable,
    label: np.ndarray | None = None,
    heat: np.ndarray | None = None,
    hu_min: float = -175.0,
    hu_max: float = 275.0,
    slice_index: int | None = None,
    max_edge_px: int = 384,
) -> bytes:
    """PNG bytes: one axial slice, organs at 40% opacity, attention heat in yellow-red.

    ``label`` holds organ-table values and ``heat`` is a 3D map in [0, 1] (e.g. the
    max over organs of the attention heatmap), both on the CT's grid.
    """
    ct = _to_ras(np.asarray(ct_hu, dtype=np.float32), affine)
    lab = None if label is None else _to_ras(np.asarray(label), affine)
    hm = None if heat is None else _to_ras(np.asarray(heat, dtype=np.float32), affine)
    k = pick_slice(lab, hm, ct.shape[2]) if slice_index is None else int(slice_index)
    gray = np.clip((ct[:, :, k] - hu_min) / (hu_max - hu_min), 0, 1)
    rgb = np.repeat(_display(gray)[..., None] * 255.0, 3, axis=2)
    if lab is not None:
        sl = _display(lab[:, :, k])
        lut = color_lut(table).astype(np.float32)
        inside = (sl > 0) & (sl < lut.shape[0])
        rgb[inside] = 0.6 * rgb[inside] + 0.4 * lut[sl[inside]]
    if hm is not None:
        h = np.clip(_display(hm[:, :, k]), 0, 1)[..., None]
        heat_rgb = np.concatenate([np.full_like(h, 255.0), 255.0 * (1 - h), np.zeros_like(h)], axis=2)
        alpha = 0.6 * h
        rgb = (1 - alpha) * rgb + alpha * heat_rgb
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    # keep the physical aspect ratio: displayed pixels are spacing_x by spacing_y mm
    sx, sy = ras_spacing_mm(affine)[:2]
    w, h = img.size
    scale = max_edge_px / max(w * sx, h * sy)
    img = img.resize((max(1, round(w * sx * scale)), max(1, round(h * sy * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
