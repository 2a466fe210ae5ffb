"""Foreground-favouring patch sampling for partial labels.

With probability ``fg_prob`` a patch is centred on a random voxel of a random
organ that the case annotates (and that is present inside its annotated
voxels); otherwise its centre is uniform over the volume. Centres are then
shifted so the patch lies inside the volume, and volumes smaller than the
patch are padded first (image 0 = the bottom of the HU window, label 0,
padding counted as annotated background: it is air outside the scan).

Hand-written rather than ``monai.transforms.RandCropByPosNegLabel``: MONAI's
sampler treats every non-zero label as foreground and draws negatives from
background voxels, while here foreground must be an *annotated* organ of the
case (chosen per organ, so small organs are not drowned by the liver) and the
negative draw is uniform. Foreground voxel indices are computed once per case.

Memory is bounded twice over:

- :class:`PatchSampler` keeps at most ``cases_in_memory`` prepared cases, a
  :class:`~alqa_core.training.pool.CasePool` window over the whole training
  set that slides at every :meth:`PatchSampler.set_epoch` (a quarter of it
  replaced per epoch, or more so that the window passes over every case within
  ``epochs``; cases given as :class:`~alqa_core.training.cases.LazyCase`
  load only when they enter). When the pool holds every case, patches are
  exactly those of one list of every case, in the given order.
- Per organ it keeps the flat indices of at most ``max(10,000, 1%)`` of its
  voxels, nnU-Net v2's rule (``DefaultPreprocessor._sample_foreground_locations``:
  ``num_samples=10000, min_percent_coverage=0.01``), a uniform random subset
  drawn with a generator seeded by (seed, case id, organ). A foreground centre
  drawn uniformly from a uniform random subset is uniform over the organ, so
  each draw has the same distribution as before; what changes is only that
  the draws of one run share that subset (as in nnU-Net). Organs of at most
  10,000 voxels keep every index, so their draws are bit-identical to before.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from alqa_core.organs import OrganTable
from alqa_core.training.cases import TrainingCase, TrainingItem, one_hot_organs
from alqa_core.training.pool import CasePool

#: nnU-Net v2's foreground-location budget per organ and case: this many voxels, or this share if more
MAX_FOREGROUND_VOXELS = 10_000
MIN_FOREGROUND_SHARE = 0.01


@dataclass(frozen=True, eq=False)
class PaddedCase:
    """A case padded to at least the patch size, with per-organ foreground voxel indices (flat, C order)."""

    case: TrainingCase
    image: np.ndarray
    label: np.ndarray
    annotated_voxels: np.ndarray | None
    organ_weight: np.ndarray  # (C,) float32
    foreground: tuple[np.ndarray, ...]  # per annotated-and-present organ: flat indices into the padded volume


@dataclass(frozen=True, eq=False)
class Patch:
    case_id: str
    image: np.ndarray  # (1, *patch) float32
    target: np.ndarray  # (C, *patch) float32
    voxel_mask: np.ndarray | None  # (1, *patch) float32, or None when the whole case is annotated
    organ_weight: np.ndarray  # (C,) float32
    centre_vox: tuple[int, int, int]
    foreground_draw: bool


@dataclass(frozen=True, eq=False)
class Batch:
    image: torch.Tensor  # (B, 1, *patch)
    target: torch.Tensor  # (B, C, *patch)
    voxel_mask: torch.Tensor | None  # (B, 1, *patch) or None
    organ_weight: torch.Tensor  # (B, C)


def _pad_widths(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    out = []
    for s, p in zip(shape, patch):
        extra = max(0, int(p) - int(s))
        out.append((extra // 2, extra - extra // 2))
    return out


def foreground_budget(n_voxels: int, max_voxels: int | None = MAX_FOREGROUND_VOXELS) -> int:
    """How many of an organ's ``n_voxels`` locations are kept: all up to ``max_voxels``, else max(max_voxels, 1%)."""
    if max_voxels is None or n_voxels <= max_voxels:
        return int(n_voxels)
    return min(int(n_voxels), max(int(max_voxels), math.ceil(n_voxels * MIN_FOREGROUND_SHARE)))


def _subsample(idx: np.ndarray, keep: int, seed: int, case_id: str, value: int) -> np.ndarray:
    if keep >= idx.size:
        return idx
    digest = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big")
    rng = np.random.default_rng((int(seed), digest, int(value)))
    return np.sort(idx[rng.choice(idx.size, size=keep, replace=False)])


def prepare_case(
    case: TrainingCase, table: OrganTable, patch_size_vox: Sequence[int], max_foreground_voxels: int | None = None, seed: int = 0
) -> PaddedCase:
    """Pad ``case`` to the patch size and index the voxels of each annotated organ.

    ``max_foreground_voxels`` (None: keep every index) bounds each organ's
    indices by :func:`foreground_budget`, a subset seeded by (seed, case id, organ).
    """
    pads = _pad_widths(case.image.shape, patch_size_vox)
    needs_pad = any(a or b for a, b in pads)
    image = np.pad(case.image, pads, constant_values=0.0) if needs_pad else case.image
    label = np.pad(case.label, pads, constant_values=0) if needs_pad else case.label
    mask = case.annotated_voxels
    if mask is not None and needs_pad:
        mask = np.pad(mask, pads, constant_values=True)
    weights = case.organ_weights(table)
    foreground = []
    for value, w in zip(table.values, weights):
        if w == 0:
            continue
        hit = label == value
        if mask is not None:
            hit &= mask
        idx = np.flatnonzero(hit)
        if idx.size:
            idx = _subsample(idx, foreground_budget(idx.size, max_foreground_voxels), seed, case.case_id, int(value))
            foreground.append(idx.astype(np.int32 if hit.size < 2**31 else np.int64))
    return PaddedCase(case, image, label, mask, weights, tuple(foreground))


def crop_start(centre: Sequence[int], shape: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """Patch start so the patch is centred at ``centre`` where possible and lies inside ``shape``."""
    return tuple(int(min(max(c - p // 2, 0), s - p)) for c, s, p in zip(centre, shape, patch))


def sample_patch(
    prepared: PaddedCase,
    table: OrganTable,
    patch_size_vox: Sequence[int],
    rng: np.random.Generator,
    fg_prob: float = 0.67,
) -> Patch:
    """Draw one patch from a prepared case (see module docstring)."""
    shape = prepared.image.shape
    foreground_draw = bool(prepared.foreground) and rng.random() < fg_prob
    if foreground_draw:
        organ_idx = prepared.foreground[int(rng.integers(len(prepared.foreground)))]
        flat = int(organ_idx[int(rng.integers(organ_idx.size))])
        centre = tuple(int(v) for v in np.unravel_index(flat, shape))
    else:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = crop_start(centre, shape, patch_size_vox)
    window = tuple(slice(b, b + int(p)) for b, p in zip(start, patch_size_vox))
    label = prepared.label[window]
    mask = None if prepared.annotated_voxels is None else prepared.annotated_voxels[window][None].astype(np.float32)
    return Patch(
        case_id=prepared.case.case_id,
        image=np.ascontiguousarray(prepared.image[window][None], dtype=np.float32),
        target=one_hot_organs(label, table),
        voxel_mask=mask,
        organ_weight=prepared.organ_weight,
        centre_vox=centre,
        foreground_draw=foreground_draw,
    )


def collate(patches: Sequence[Patch]) -> Batch:
    """Stack patches into tensors; the voxel mask is all-ones for cases without one."""
    masks = None
    if any(p.voxel_mask is not None for p in patches):
        masks = torch.from_numpy(
            np.stack([p.voxel_mask if p.voxel_mask is not None else np.ones_like(p.image) for p in patches])
        )
    return Batch(
        image=torch.from_numpy(np.stack([p.image for p in patches])),
        target=torch.from_numpy(np.stack([p.target for p in patches])),
        voxel_mask=masks,
        organ_weight=torch.from_numpy(np.stack([p.organ_weight for p in patches])),
    )


class PatchSampler:
    """Seeded batches from a set of cases: a case of the pool uniformly at random, then :func:`sample_patch`.

    ``cases`` are :class:`~alqa_core.training.cases.TrainingItem` s; at most
    ``cases_in_memory`` (None: all) are prepared at a time. Call
    :meth:`set_epoch` at the start of each epoch to slide the pool; with every
    case in the pool it changes nothing. ``epochs`` (the run's most) makes the
    pool slide fast enough to visit every case within them.
    """

    def __init__(
        self,
        cases: Sequence[TrainingItem],
        table: OrganTable,
        patch_size_vox: Sequence[int],
        fg_prob: float = 0.67,
        seed: int = 0,
        cases_in_memory: int | None = None,
        max_foreground_voxels: int | None = MAX_FOREGROUND_VOXELS,
        epochs: int | None = None,
    ):
        if not cases:
            raise ValueError("PatchSampler needs at least one case")
        if not 0.0 <= fg_prob <= 1.0:
            raise ValueError(f"fg_prob must be in [0, 1], got {fg_prob}")
        if cases_in_memory is not None and cases_in_memory < 1:
            raise ValueError(f"cases_in_memory must be >= 1, got {cases_in_memory}")
        self.table = table
        self.patch_size_vox = tuple(int(p) for p in patch_size_vox)
        self.fg_prob = float(fg_prob)
        self.seed = int(seed)
        self.max_foreground_voxels = max_foreground_voxels
        self.cases = tuple(cases)
        self.pool: CasePool[PaddedCase] = CasePool(len(self.cases), cases_in_memory or len(self.cases), self.seed, self._prepare, epochs)
        self.epoch = 0
        # the first pool, prepared now: a case that fails to load stops training before it starts
        self._prepared: tuple[PaddedCase, ...] = self.pool.items(0)
        self.rng = np.random.default_rng(seed)

    def _prepare(self, index: int) -> PaddedCase:
        return prepare_case(self.cases[index].load(), self.table, self.patch_size_vox, self.max_foreground_voxels, self.seed)

    @property
    def prepared(self) -> tuple[PaddedCase, ...]:
        """The prepared cases of the current pool (every case when the pool holds them all, in the given order)."""
        return self._prepared

    def set_epoch(self, epoch: int) -> None:
        """Slide the pool to ``epoch``'s window (releasing the cases that leave it, loading those that enter)."""
        self.epoch = int(epoch)
        self._prepared = ()  # drop our references first, so the cases leaving the pool are freed before new ones load
        self._prepared = self.pool.items(self.epoch)

    def patch(self) -> Patch:
        prepared = self.prepared
        case = prepared[int(self.rng.integers(len(prepared)))]
        return sample_patch(case, self.table, self.patch_size_vox, self.rng, self.fg_prob)

    def batch(self, batch_size: int) -> Batch:
        return collate([self.patch() for _ in range(batch_size)])


__all__ = [
    "MAX_FOREGROUND_VOXELS",
    "Batch",
    "PaddedCase",
    "Patch",
    "PatchSampler",
    "collate",
    "crop_start",
    "foreground_budget",
    "prepare_case",
    "sample_patch",
]
