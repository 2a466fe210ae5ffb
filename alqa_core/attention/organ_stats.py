"""What a kernel backend returns for one organ: Eq. 1-3, sparse (shared by the numpy, numba and torch backends)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class OrganStats:
    """Eq. 1-3 of one organ, sparse. Off everywhere outside ``band`` / ``overlap``.

    ``band``: sorted flat voxel indices where Eq. 1-2 were evaluated; the
    other arrays but ``overlap`` are aligned with it. ``overlap``: sorted flat
    voxel indices where Eq. 3 is 1. ``organ_voxels``: voxels where the mean
    over covering members is > 0.5.
    """

    band: np.ndarray
    inconsistent: np.ndarray
    uncertain: np.ndarray
    std: np.ndarray
    entropy: np.ndarray
    overlap: np.ndarray
    organ_voxels: int
