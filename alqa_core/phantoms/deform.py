"""Smooth random fields: displacement of the anatomy and soft textures.

A field is random values on a coarse control grid (one point every
``cell_mm``), smoothed with a Gaussian (scipy), then upsampled to the voxel
grid by separable linear interpolation. Because the control grid is defined
in millimetres over the field of view, a seed gives the same anatomy at any
voxel spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def control_shape(fov_mm: tuple[float, float, float], cell_mm: float) -> tuple[int, int, int]:
    """Control points per axis: one every ``cell_mm`` across ``fov_mm`` (at least 2)."""
    return tuple(max(2, int(np.ceil(f / cell_mm)) + 1) for f in fov_mm)


def random_control(
    rng: np.random.Generator, shape: tuple[int, int, int], sigma_cells: float = 1.0
) -> np.ndarray:
    """Gaussian-smoothed white noise on a control grid, rescaled to zero mean and unit std."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_cells, mode="nearest")
    noise -= noise.mean()
    return (noise / max(float(noise.std()), 1e-6)).astype(np.float32)


def _linear_weights(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of linear interpolation with the end points aligned."""
    pos = np.linspace(0.0, n_in - 1.0, n_out) if n_out > 1 else np.zeros(1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 2)
    frac = (pos - lo).astype(np.float32)
    w = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    w[rows, lo] = 1.0 - frac
    w[rows, lo + 1] = frac
    return w


def upsample(control: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear upsampling of a small control grid to ``shape`` (corners aligned).

    Hand-written as three small matrix products: ``scipy.ndimage.zoom`` picks
    its output shape by rounding (so it cannot hit an exact grid) and is ~15x
    slower for a 10-point control grid, which dominated the phantom budget.
    """
    c = np.asarray(control, dtype=np.float32)
    wx, wy, wz = (_linear_weights(n, m) for n, m in zip(shape, c.shape))
    out = np.tensordot(wx, c, axes=(1, 0))  # (nx, cy, cz)
    out = np.einsum("jb,ibc->ijc", wy, out, optimize=False)  # (nx, ny, cz)
    return np.ascontiguousarray(out @ wz.T)  # (nx, ny, nz)


def displacement_controls(
    rng: np.random.Generator,
    fov_mm: tuple[float, float, float],
    amplitude_mm: float,
    cell_mm: float = 40.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three control grids (lat, ap, sup) of a smooth displacement with std ``amplitude_mm``."""
    shape = control_shape(fov_mm, cell_mm)
    return tuple(random_control(rng, shape) * np.float32(amplitude_mm) for _ in range(3))


__all__ = ["control_shape", "displacement_controls", "random_control", "upsample"]
