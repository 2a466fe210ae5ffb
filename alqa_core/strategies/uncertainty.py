"""Slice- and volume-level uncertainty from voxel-wise predictive entropy (004_03246784a706ec26.txt §II.D).

Voxel uncertainty is the predictive entropy of the MC-dropout mean (004 Eq. 2,
n = 20 samples there; :func:`alqa_core.ensemble.inference.mc_dropout_predict`). Our
networks have independent per-organ sigmoid heads, so a ``(C, i, j, k)``
entropy is first SUMMED over organs: the sum of the heads' binary entropies
is the entropy of their joint distribution (``McResult.total_entropy``), the
multi-label counterpart of 004's softmax entropy.

- **Slice-level uncertainty** (004: "the average of the predictive entropy for
  all voxels belonging to a given slice", over ALL voxels, since the slice
  measure is less sensitive to organ size): ``reduce="mean"``, the default.
  ``reduce="sum"`` gives the total instead. With a ``foreground`` mask (e.g.
  the body) the mean runs over the slice's masked voxels only; a slice with
  no masked voxel scores 0.
- **Candidates**: local maxima of the slice curve at least ``min_distance``
  (004: 5) slices apart, strongest first (:func:`candidate_slices`).
- **Volume-level uncertainty** (004, after Mehrtash et al.): the mean voxel
  entropy over a DILATED foreground mask (an 11 x 11 x 11 kernel in 004), so
  that the measure does not depend on how much air and body surround the
  organs. :func:`case_uncertainty` builds that mask from the predicted
  organs; with no predicted organ at all it falls back to the whole volume.

Axes: the slice axis is a SPATIAL axis of the (i, j, k) volume; ``axis=-1``
is ``k``, the axial axis of alqa's RAS volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

#: 004: "We require a minimum distance between peaks to be five slices".
MIN_PEAK_DISTANCE_SLICES = 5
#: 004: volume uncertainty over the organ mask dilated with an 11 x 11 x 11 kernel.
VOLUME_DILATION_VOX = 11
REDUCTIONS = ("mean", "sum")


def _voxel_entropy(entropy: np.ndarray) -> np.ndarray:
    """(C, i, j, k) -> summed over organs; (i, j, k) as is. float32 voxels (reductions accumulate in float64)."""
    arr = np.asarray(entropy)
    if arr.ndim == 4:
        arr = arr.sum(axis=0, dtype=np.float32)
    elif arr.ndim == 3:
        arr = arr.astype(np.float32, copy=False)
    else:
        raise ValueError(f"entropy must be (C, i, j, k) or (i, j, k), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("entropy contains NaN or inf")
    return arr


def _spatial_axis(axis: int) -> int:
    if axis not in (-3, -2, -1, 0, 1, 2):
        raise ValueError(f"axis must be a spatial axis of (i, j, k): one of -3..2, got {axis}")
    return axis % 3


def slice_uncertainty(
    entropy: np.ndarray, axis: int = -1, foreground: np.ndarray | None = None, reduce: str = "mean"
) -> np.ndarray:
    """Per-slice uncertainty curve, float64 ``(n_slices,)`` along spatial ``axis``.

    ``entropy``: ``(C, i, j, k)`` (summed over organs) or ``(i, j, k)``.
    ``reduce="mean"``: mean voxel entropy of each slice (004); ``"sum"``: total.
    ``foreground``: optional bool ``(i, j, k)`` mask (e.g. the body); only its
    voxels count, and a slice without any scores 0.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    vox = _voxel_entropy(entropy)
    ax = _spatial_axis(axis)
    others = tuple(a for a in range(3) if a != ax)
    if foreground is None:
        total = vox.sum(axis=others, dtype=np.float64)
        if reduce == "sum":
            return total
        return total / float(np.prod([vox.shape[a] for a in others]))
    mask = np.asarray(foreground)
    if mask.shape != vox.shape or mask.dtype != np.bool_:
        raise ValueError(f"foreground must be a bool mask of shape {vox.shape}, got {mask.dtype} {mask.shape}")
    total = np.where(mask, vox, np.float32(0.0)).sum(axis=others, dtype=np.float64)
    if reduce == "sum":
        return total
    count = mask.sum(axis=others).astype(np.float64)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def candidate_slices(
    curve: np.ndarray, min_distance: int = MIN_PEAK_DISTANCE_SLICES, max_candidates: int | None = None
) -> tuple[int, ...]:
    """Local maxima of ``curve`` at least ``min_distance`` slices apart, strongest first.

    Uses :func:`scipy.signal.find_peaks` with ``distance=min_distance`` (it
    drops the weaker of two peaks closer than that). The curve is padded with
    a value below its minimum on both sides so that a maximum at the first or
    last slice counts; a flat top (plateau) gives one candidate, its middle
    slice (rounded down). A constant curve is one plateau: one candidate.
    Ties in strength are broken by the lower slice index.
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"curve must be 1D, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("curve contains NaN or inf")
    if int(min_distance) < 1:
        raise ValueError(f"min_distance must be >= 1 slice, got {min_distance}")
    if max_candidates is not None and max_candidates < 0:
        raise ValueError(f"max_candidates must be >= 0 or None, got {max_candidates}")
    if y.size == 0:
        return ()
    low = y.min() - 1.0
    peaks, _ = signal.find_peaks(np.concatenate([[low], y, [low]]), distance=int(min_distance))
    peaks = peaks - 1
    order = np.lexsort((peaks, -y[peaks]))  # strength desc, then index asc
    ranked = tuple(int(p) for p in peaks[order])
    return ranked if max_candidates is None else ranked[: int(max_candidates)]


def dilated_foreground(mask: np.ndarray, kernel_vox: int = VOLUME_DILATION_VOX) -> np.ndarray:
    """Binary dilation of ``mask`` with a ``kernel_vox``-wide cube (004: 11 x 11 x 11).

    Done as a separable maximum filter (:func:`scipy.ndimage.maximum_filter`),
    which equals binary dilation with a cube but costs O(3 k) per voxel, not O(k^3).
    """
    if kernel_vox < 1:
        raise ValueError(f"kernel_vox must be >= 1, got {kernel_vox}")
    m = np.asarray(mask, dtype=np.uint8)
    return ndimage.maximum_filter(m, size=int(kernel_vox), mode="constant", cval=0).astype(bool)


def volume_uncertainty(entropy: np.ndarray, foreground: np.ndarray | None = None) -> float:
    """Mean voxel entropy (summed over organs), over ``foreground`` if given (004: a dilated organ mask).

    ValueError for an empty ``foreground``: there is nothing to average.
    """
    vox = _voxel_entropy(entropy)
    if foreground is None:
        return float(vox.mean(dtype=np.float64))
    mask = np.asarray(foreground)
    if mask.shape != vox.shape or mask.dtype != np.bool_:
        raise ValueError(f"foreground must be a bool mask of shape {vox.shape}, got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError("foreground mask is empty: volume uncertainty is undefined")
    return float(vox[mask].mean(dtype=np.float64))


def _readonly(array: np.ndarray, dtype) -> np.ndarray:
    out = np.array(array, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class CaseUncertainty:
    """What the selection strategies know about one pool case.

    ``slice_uncertainty``: the curve (n_slices,), for USS. ``volume_uncertainty``:
    one number, for UVS. ``slice_foreground``: predicted foreground per slice
    (voxels, >= 0), for foreground-aware random sampling and the optional
    empty-slice effort rule. ``annotated_slices``: slices already labelled
    (never selected again). Random strategies need only ``n_slices``.
    """

    case_id: str
    n_slices: int
    slice_uncertainty: np.ndarray | None = None
    volume_uncertainty: float | None = None
    slice_foreground: np.ndarray | None = None
    annotated_slices: tuple[int, ...] = ()

    def __post_init__(self):
        n = int(self.n_slices)
        object.__setattr__(self, "n_slices", n)
        if n < 1:
            raise ValueError(f"case {self.case_id}: n_slices must be >= 1, got {n}")
        for name in ("slice_uncertainty", "slice_foreground"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = _readonly(value, np.float64)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"case {self.case_id}: {name} must be {n} finite values, got shape {arr.shape}")
            if name == "slice_foreground" and (arr < 0).any():
                raise ValueError(f"case {self.case_id}: slice_foreground must be >= 0")
            object.__setattr__(self, name, arr)
        if self.volume_uncertainty is not None:
            v = float(self.volume_uncertainty)
            if not np.isfinite(v):
                raise ValueError(f"case {self.case_id}: volume_uncertainty must be finite, got {v}")
            object.__setattr__(self, "volume_uncertainty", v)
        done = tuple(sorted(set(int(s) for s in self.annotated_slices)))
        if done and (done[0] < 0 or done[-1] >= n):
            raise ValueError(f"case {self.case_id}: annotated_slices must be in [0, {n}), got {done}")
        object.__setattr__(self, "annotated_slices", done)

    def open_slices(self) -> np.ndarray:
        """Slice indices not yet annotated, ascending."""
        free = np.ones(self.n_slices, dtype=bool)
        free[list(self.annotated_slices)] = False
        return np.flatnonzero(free)

    def foreground_flags(self) -> np.ndarray | None:
        """bool (n_slices,) "slice has predicted foreground", or None if unknown."""
        return None if self.slice_foreground is None else self.slice_foreground > 0


def case_uncertainty(
    case_id: str,
    predictive_entropy: np.ndarray,
    mean_probabilities: np.ndarray | None = None,
    axis: int = -1,
    body_mask: np.ndarray | None = None,
    threshold: float = 0.5,
    dilation_vox: int = VOLUME_DILATION_VOX,
    annotated_slices: tuple[int, ...] = (),
) -> CaseUncertainty:
    """A :class:`CaseUncertainty` from MC-dropout outputs (``McResult`` fields).

    ``predictive_entropy``: (C, i, j, k) or (i, j, k). ``mean_probabilities``:
    (C, i, j, k); its voxels where any organ is > ``threshold`` are the
    predicted foreground: counted per slice, and, dilated by ``dilation_vox``,
    the mask of the volume uncertainty (whole volume when nothing is
    predicted, or when no probabilities are given). ``body_mask`` restricts
    the slice curve (default: all voxels, as in 004).
    """
    vox = _voxel_entropy(predictive_entropy)
    ax = _spatial_axis(axis)
    curve = slice_uncertainty(vox, ax, body_mask)
    fg_per_slice = None
    region = None
    if mean_probabilities is not None:
        probs = np.asarray(mean_probabilities)
        if probs.ndim != 4 or probs.shape[1:] != vox.shape:
            raise ValueError(f"mean_probabilities must be (C, {vox.shape}), got {probs.shape}")
        fg = (probs > threshold).any(axis=0)
        fg_per_slice = fg.sum(axis=tuple(a for a in range(3) if a != ax)).astype(np.float64)
        if fg.any():
            region = dilated_foreground(fg, dilation_vox)
    return CaseUncertainty(
        case_id=case_id,
        n_slices=vox.shape[ax],
        slice_uncertainty=curve,
        volume_uncertainty=volume_uncertainty(vox, region),
        slice_foreground=fg_per_slice,
        annotated_slices=tuple(annotated_slices),
    )


__all__ = [
    "MIN_PEAK_DISTANCE_SLICES",
    "REDUCTIONS",
    "VOLUME_DILATION_VOX",
    "CaseUncertainty",
    "candidate_slices",
    "case_uncertainty",
    "dilated_foreground",
    "slice_uncertainty",
    "volume_uncertainty",
]
