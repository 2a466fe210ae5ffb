"""Typed volumes: an array on a world grid.

Axes follow nibabel: the array is indexed ``[i, j, k]`` (``k`` is the slice
axis for axial CT) and ``affine`` maps voxel indices to RAS+ world
coordinates in millimetres, exactly as stored in a NIfTI header. DICOM's LPS
patient coordinates are converted on read, so every volume in alqa shares
one convention.

Arrays are made read-only on construction: no function in alqa mutates its
inputs, and this makes an accidental in-place edit fail loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alqa_core.errors import AlqaInputError

#: Geometry comparisons use this tolerance unless told otherwise.
GRID_TOLERANCE_MM = 1e-3


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the three array axes (column norms)."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.asarray(array)
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in world space: shape plus voxel-to-RAS affine (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "affine", _frozen(np.asarray(self.affine, dtype=np.float64)))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    def matches(self, other: "Grid", tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
        """Same shape, and every voxel centre within ``tolerance_mm``."""
        if tuple(self.shape) != tuple(other.shape):
            return False
        return grid_mismatch_mm(self, other) <= tolerance_mm


def grid_mismatch_mm(a: Grid, b: Grid) -> float:
    """Largest distance (mm) between corresponding corner voxel centres."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1) for k in (0, a.shape[2] - 1)]
    ).T
    return float(np.abs(a.affine @ corners - b.affine @ corners)[:3].max())


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT image in Hounsfield units (float32), shape ``(i, j, k)``."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "array", _frozen(np.asarray(self.array, dtype=np.float32)))
        object.__setattr__(self, "affine", _frozen(np.asarray(self.affine, dtype=np.float64)))

    @property
    def grid(self) -> Grid:
        return Grid(self.array.shape[:3], self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)


@dataclass(frozen=True, eq=False)
class LabelMap:
    """An integer label volume, shape ``(i, j, k)``; 0 is background.

    ``values`` are in whatever numbering ``class_map_name`` says; after
    :func:`alqa_core.organs.remap_labels` they are organ-table values.
    """

    array: np.ndarray
    affine: np.ndarray
    class_map_name: str = "organ_table"

    def __post_init__(self):
        arr = np.asarray(self.array)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"LabelMap needs an integer array, got {arr.dtype}")
        object.__setattr__(self, "array", _frozen(arr))
        object.__setattr__(self, "affine", _frozen(np.asarray(self.affine, dtype=np.float64)))

    @property
    def grid(self) -> Grid:
        return Grid(self.array.shape[:3], self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


@dataclass(frozen=True, eq=False)
class SoftPrediction:
    """Per-organ probabilities of one member for one case.

    ``array`` is uint8 with shape ``(C, i, j, k)`` and holds ``round(p * 255)``;
    channel ``c`` is organ ``organs[c]`` (names from the organ table, background
    excluded). Heads are per-organ sigmoids, so channels need not sum to one.
    """

    array: np.ndarray
    affine: np.ndarray
    organs: tuple[str, ...]
    member: str = ""

    def __post_init__(self):
        arr = np.asarray(self.array)
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise TypeError(f"SoftPrediction needs a uint8 (C, i, j, k) array, got {arr.dtype} {arr.shape}")
        if arr.shape[0] != len(self.organs):
            raise ValueError(f"SoftPrediction has {arr.shape[0]} channels for {len(self.organs)} organs")
        object.__setattr__(self, "array", _frozen(arr))
        object.__setattr__(self, "affine", _frozen(np.asarray(self.affine, dtype=np.float64)))
        object.__setattr__(self, "organs", tuple(self.organs))

    @property
    def grid(self) -> Grid:
        return Grid(self.array.shape[1:4], self.affine)

    def probabilities(self) -> np.ndarray:
        """Float32 probabilities in [0, 1] (a new array)."""
        return self.array.astype(np.float32) / np.float32(255.0)


def quantize_probabilities(p: np.ndarray) -> np.ndarray:
    """Float probabilities in [0, 1] to the stored uint8 form ``round(p * 255)``."""
    return np.clip(np.rint(np.asarray(p, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


#: Voxels per counting chunk of :func:`label_value_counts` (each chunk's int64 cast stays in cache).
_COUNT_CHUNK_VOXELS = 1 << 20


def label_value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values present in a label array and their voxel counts, as ``np.unique(..., return_counts=True)``.

    Label maps are uint8: ``bincount`` over 1 Mi-voxel chunks of the array in its own memory
    order took 0.1 s on a 512x512x300 label, where ``np.unique``'s flatten and sort took 1.7 s
    and one whole-array ``bincount`` 0.6 s. Other dtypes go to ``np.unique``.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "ub" or arr.dtype.itemsize > 2:
        return np.unique(arr, return_counts=True)
    flat = arr.ravel(order="K")
    counts = np.zeros(256 ** arr.dtype.itemsize if arr.dtype.kind == "u" else 2, np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK_VOXELS):
        counts += np.bincount(flat[start : start + _COUNT_CHUNK_VOXELS], minlength=counts.size)
    values = np.flatnonzero(counts)
    return values, counts[values]


def require_same_grid(reference: Grid, grid: Grid, what: str, ref_what: str) -> None:
    """Refuse ``grid`` (of ``what``) unless it matches ``reference`` (of ``ref_what``), naming both."""
    if not reference.matches(grid):
        raise AlqaInputError(
            what,
            f"grid {tuple(grid.shape)} with affine {np.round(grid.affine, 3).tolist()} differs from "
            f"{ref_what}'s {tuple(reference.shape)} with affine {np.round(reference.affine, 3).tolist()}",
        )


__all__ = [
    "require_same_grid",
    "GRID_TOLERANCE_MM",
    "Grid",
    "CTVolume",
    "LabelMap",
    "SoftPrediction",
    "grid_mismatch_mm",
    "label_value_counts",
    "quantize_probabilities",
    "spacing_from_affine",
]
