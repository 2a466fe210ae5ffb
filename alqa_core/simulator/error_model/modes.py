"""The geometry of each error mode: what a network gets wrong, as changes to ground-truth organ masks.

Every mode is a pure function of the ground-truth masks (organ name -> bool
volume), the voxel spacing, a random generator and whether the error is
*major* (a failure) or *minor*. It returns the :class:`Change` list that turns
the truth into the erroneous prediction, or ``None`` when it cannot apply
(e.g. a kidney confusion in a case with one kidney). Sizes are drawn in
millimetres, so a mode means the same at any spacing, and every region keeps
at least one voxel.

Modes (issue 15; 003 §3.1's error catalogue: under-/over-segmentation,
organ confusions, missing organs). A *major* error is sized to be a failure
in 000's sense (QA grade 2): it leaves an organ with Dice < 0.5.

- ``boundary_shift``: a patch of the surface (a ball of radius
  :data:`SHIFT_PATCH_MM` around a surface voxel) grown or shrunk by 1-2 voxels;
- ``hole``: a ball inside the organ left out (minor: 15-30% of the organ's
  equivalent radius; major: 45-70%, which is not a failure by itself and is
  not among the default failure modes);
- ``truncation``: the organ's superior or inferior end cut off (minor: 5-15%
  of its slices; major: 65-90%);
- ``fp_blob``: a blob of the organ predicted inside a neighbouring organ (the
  one it touches most), which loses those voxels (minor: a ball of radius
  4-8 mm; major: the host's voxels nearest a point, 2-3 times the organ's
  volume, within 40 mm, for organs of at most :data:`MAJOR_BLOB_MAX_ML`: a
  small organ predicted where it is not, as a gallbladder in the liver);
- ``confusion``: left/right kidney (major only: the whole kidney takes the
  other side's label), or spleen/liver where they touch (minor: the organ's
  part within 6-12 mm of the other takes the other's label; major: 70-95% of
  the spleen, nearest the liver first, labelled liver);
- ``missed``: the whole organ absent (major only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy import ndimage

MODES = ("boundary_shift", "hole", "truncation", "fp_blob", "confusion", "missed")
#: modes a minor (non-failure) error may take; ``missed`` is always a failure
MINOR_MODES = ("boundary_shift", "hole", "truncation", "fp_blob", "confusion")
#: (low, high) radius of the surface patch a boundary shift moves, mm
SHIFT_PATCH_MM = (10.0, 25.0)
#: confusion pairs; kidneys are confused whole (major), spleen and liver where they touch
KIDNEYS = ("kidney_right", "kidney_left")
SPLEEN_LIVER = ("spleen", "liver")
#: neighbours are organs within this distance (mm) of the organ's surface
NEIGHBOUR_MM = 8.0
#: a major blob is 2-3 times its organ's volume: only organs this small (mL) get one
MAJOR_BLOB_MAX_ML = 60.0

Masks = Mapping[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class Change:
    """Set ``organ``'s predicted mask to ``value`` on ``region`` (bool, the case's grid)."""

    organ: str
    region: np.ndarray
    value: bool


@dataclass(frozen=True, eq=False)
class ModeResult:
    changes: tuple[Change, ...]
    #: the other organ involved (neighbour of a blob, the confused organ), "" if none
    other: str = ""


def _ball(shape, centre, radius_mm: float, spacing) -> np.ndarray:
    """Bool volume: voxels within ``radius_mm`` of voxel ``centre`` (at least the centre itself)."""
    out = np.zeros(shape, dtype=bool)
    ext = [int(math.floor(radius_mm / s)) for s in spacing]
    lo = [max(int(c) - e, 0) for c, e in zip(centre, ext)]
    hi = [min(int(c) + e + 1, n) for c, e, n in zip(centre, ext, shape)]
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    dist2 = sum(((g - int(c)) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = dist2 <= radius_mm**2 + 1e-9
    out[tuple(int(c) for c in centre)] = True
    return out


def _random_voxel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    flat = np.flatnonzero(mask)
    return tuple(int(v) for v in np.unravel_index(int(flat[rng.integers(flat.size)]), mask.shape))


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _distance_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``mask`` (non-empty)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing)


def _volume_ml(mask: np.ndarray, spacing) -> float:
    return float(mask.sum()) * float(np.prod(spacing)) / 1000.0


def equivalent_radius_mm(mask: np.ndarray, spacing) -> float:
    """Radius of the ball with the organ's volume."""
    volume = float(mask.sum()) * float(np.prod(spacing))
    return (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)


def neighbour_of(organ: str, masks: Masks, spacing) -> str:
    """The present organ with the most voxels within :data:`NEIGHBOUR_MM` of ``organ`` ("" if it is alone)."""
    others = [o for o, m in masks.items() if o != organ and m.any()]
    if not others or not masks[organ].any():
        return ""
    near = _distance_mm(masks[organ], spacing) <= NEIGHBOUR_MM
    counts = {o: int(np.count_nonzero(masks[o] & near)) for o in others}
    best = max(others, key=lambda o: (counts[o], o))
    if counts[best] > 0:
        return best
    dist = _distance_mm(masks[organ], spacing)
    return min(others, key=lambda o: (float(dist[masks[o]].min()), o))


# --------------------------------------------------------------------------- modes


def boundary_shift(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """A surface patch grown (outward) or shrunk (inward) by 1-2 voxels."""
    mask = masks[organ]
    if not mask.any():
        return None
    centre = _random_voxel(_surface(mask), rng)
    patch = _ball(mask.shape, centre, float(rng.uniform(*SHIFT_PATCH_MM)), spacing)
    k = int(rng.integers(1, 3))
    if rng.random() < 0.5:
        region = patch & ndimage.binary_dilation(mask, iterations=k) & ~mask
        value = True
    else:
        region = patch & mask & ~ndimage.binary_erosion(mask, iterations=k)
        value = False
    return ModeResult((Change(organ, region, value),)) if region.any() else None


def hole(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """A ball inside the organ left out."""
    mask = masks[organ]
    if not mask.any():
        return None
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    frac = rng.uniform(0.45, 0.7) if major else rng.uniform(0.15, 0.3)
    radius = frac * equivalent_radius_mm(mask, spacing)
    inner = depth >= min(radius, float(depth.max()))  # centre deep enough for the ball to lie mostly inside
    region = _ball(mask.shape, _random_voxel(inner, rng), radius, spacing) & mask
    return ModeResult((Change(organ, region, False),))


def truncation(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """The organ's superior or inferior end (along the third axis) cut off."""
    mask = masks[organ]
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    if ks.size < 2:
        return None
    frac = rng.uniform(0.65, 0.9) if major else rng.uniform(0.05, 0.15)
    n_cut = max(1, int(round(frac * ks.size)))
    region = np.zeros_like(mask)
    if rng.random() < 0.5:
        region[:, :, ks[-n_cut] :] = mask[:, :, ks[-n_cut] :]
    else:
        region[:, :, : ks[n_cut - 1] + 1] = mask[:, :, : ks[n_cut - 1] + 1]
    return ModeResult((Change(organ, region, False),))


def fp_blob(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """A blob of ``organ`` inside its neighbour (near their contact), which loses it."""
    other = neighbour_of(organ, masks, spacing)
    if not other or (major and _volume_ml(masks[organ], spacing) > MAJOR_BLOB_MAX_ML):
        return None
    near = masks[other] & (_distance_mm(masks[organ], spacing) <= 2.0 * NEIGHBOUR_MM)
    host = near if near.any() else masks[other]
    centre = _random_voxel(host, rng)
    if major:  # the host's voxels nearest the centre, 2-3 times the organ's volume (at most 40 mm away): its Dice falls below 0.5
        ball = _ball(host.shape, centre, 40.0, spacing) & masks[other]
        idx = np.flatnonzero(ball)
        offset = (np.stack(np.unravel_index(idx, host.shape), axis=1) - np.asarray(centre)) * np.asarray(spacing)
        n = int(round(rng.uniform(2.0, 3.0) * masks[organ].sum()))
        region = np.zeros_like(host)
        region.ravel()[idx[np.argsort(np.einsum("ij,ij->i", offset, offset), kind="stable")[:n]]] = True
    else:
        region = _ball(host.shape, centre, rng.uniform(4.0, 8.0), spacing) & masks[other]
    return ModeResult((Change(organ, region, True), Change(other, region, False)), other)


def confusion(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """Left/right kidney (whole, major) or spleen/liver where they touch, labelled as the other."""
    for pair in (KIDNEYS, SPLEEN_LIVER):
        if organ not in pair:
            continue
        other = pair[1 - pair.index(organ)]
        if not (masks[organ].any() and masks[other].any()):
            return None
        if pair == KIDNEYS:
            if not major:
                return None
            region = masks[organ]
        elif major:
            if organ != "spleen":  # the liver's part labelled spleen leaves the liver's Dice high: not a failure
                return None
            dist = _distance_mm(masks[other], spacing)
            reach = float(np.quantile(dist[masks[organ]], rng.uniform(0.7, 0.95)))
            region = masks[organ] & (dist <= reach)
        else:
            dist = _distance_mm(masks[other], spacing)
            reach = float(dist[masks[organ]].min()) + rng.uniform(6.0, 12.0)
            region = masks[organ] & (dist <= reach)
        return ModeResult((Change(organ, region, False), Change(other, region, True)), other)
    return None


def missed(organ, masks: Masks, spacing, rng, major: bool) -> ModeResult | None:
    """The whole organ absent."""
    if not major or not masks[organ].any():
        return None
    return ModeResult((Change(organ, masks[organ], False),))


#: mode name -> geometry (a table: adding a mode is adding a row)
MODE_FUNCTIONS: Mapping[str, Callable[..., ModeResult | None]] = {
    "boundary_shift": boundary_shift,
    "hole": hole,
    "truncation": truncation,
    "fp_blob": fp_blob,
    "confusion": confusion,
    "missed": missed,
}


def applicable_organs(mode: str, masks: Masks, major: bool, spacing=(1.0, 1.0, 1.0)) -> tuple[str, ...]:
    """Organs ``mode`` can hit in this case (present; in a confusion pair with both present; small enough for a major blob)."""
    present = tuple(o for o, m in masks.items() if m.any())
    if mode == "fp_blob":  # needs a neighbour to host the blob
        small = (lambda o: _volume_ml(masks[o], spacing) <= MAJOR_BLOB_MAX_ML) if major else (lambda o: True)
        return tuple(o for o in present if small(o)) if len(present) >= 2 else ()
    if mode == "confusion":
        pairs = ((KIDNEYS,) if major else ()) + (SPLEEN_LIVER,)
        hits = tuple(o for o in present for p in pairs if o in p and all(masks[x].any() for x in p))
        return tuple(o for o in hits if not (major and o == "liver"))
    if mode == "missed" and not major:
        return ()
    return present


__all__ = [
    "KIDNEYS",
    "MAJOR_BLOB_MAX_ML",
    "MINOR_MODES",
    "MODES",
    "MODE_FUNCTIONS",
    "SHIFT_PATCH_MM",
    "SPLEEN_LIVER",
    "Change",
    "ModeResult",
    "applicable_organs",
    "equivalent_radius_mm",
    "neighbour_of",
]
