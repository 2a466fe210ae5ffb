"""The voxel grid of a phantom and its anatomical coordinates.

Array axes are RAS-aligned while a phantom is built (axis 0 towards the
patient's right, 1 anterior, 2 superior); :func:`generate_case` reorients at
the end if another orientation was asked for. ``coords`` are the anatomical
coordinates (mm) of each voxel *after* the smooth displacement and the
patient's overall size scale: shapes are evaluated on them, which is what
deforms the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alqa_core.phantoms.deform import upsample


@dataclass(frozen=True, eq=False)
class Frame:
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    #: anatomical coordinate of voxel 0 along each axis, before displacement
    origin_mm: tuple[float, float, float]
    #: world (RAS) = anatomical - this, per axis
    world_offset_mm: tuple[float, float, float]
    core_scale: float
    margin_mm: float
    coords: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> RAS+ world (mm) of the RAS-aligned array."""
        aff = np.diag([*self.spacing_mm, 1.0])
        aff[:3, 3] = np.subtract(self.origin_mm, self.world_offset_mm)
        return aff

    def axis_mm(self, axis: int) -> np.ndarray:
        """Undisplaced anatomical coordinate of each index along ``axis`` (float32)."""
        return (self.origin_mm[axis] + np.arange(self.shape[axis]) * self.spacing_mm[axis]).astype(np.float32)

    def box(self, lo_mm, hi_mm) -> tuple[slice, slice, slice]:
        """Index slices covering the (core-scaled) anatomical box, widened by the displacement."""
        out = []
        for axis in range(3):
            lo = lo_mm[axis] * self.core_scale - self.margin_mm
            hi = hi_mm[axis] * self.core_scale + self.margin_mm
            o, s, n = self.origin_mm[axis], self.spacing_mm[axis], self.shape[axis]
            i0 = int(np.floor((lo - o) / s)) if np.isfinite(lo) else 0
            i1 = int(np.ceil((hi - o) / s)) + 1 if np.isfinite(hi) else n
            out.append(slice(min(max(i0, 0), self.shape[axis]), min(max(i1, 0), self.shape[axis])))
        return tuple(out)

    def sub(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[box] for c in self.coords)


def build_frame(
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float],
    origin_mm: tuple[float, float, float],
    world_offset_mm: tuple[float, float, float],
    core_scale: float,
    displacement_controls: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Frame:
    """Displaced, size-scaled anatomical coordinates of every voxel.

    The scale pivots on the anatomical origin (midline, cavity centre,
    ``sup`` = 0), so a larger patient is larger around the same centre.
    """
    axes = [
        (origin_mm[a] + np.arange(shape[a]) * spacing_mm[a]).astype(np.float32) for a in range(3)
    ]
    coords = []
    inv_scale = np.float32(1.0 / core_scale)
    for a, ctrl in enumerate(displacement_controls):
        c = upsample(ctrl, shape)
        c += axes[a].reshape([-1 if i == a else 1 for i in range(3)])
        c *= inv_scale
        coords.append(c)
    margin = float(max(np.abs(c).max() for c in displacement_controls)) + max(spacing_mm)
    return Frame(
        tuple(shape),
        tuple(spacing_mm),
        tuple(origin_mm),
        tuple(world_offset_mm),
        float(core_scale),
        margin,
        tuple(coords),
    )


__all__ = ["Frame", "build_frame"]
