"""Error-model ensembles: members made from ground truth with controlled errors, so selection is measured without training.

One call of :func:`make_members` turns a ground-truth label map into
``n_members`` soft predictions (the platform's :class:`SoftPrediction`: uint8
``round(p * 255)``, one sigmoid channel per organ of the table):

1. **Events** are drawn per case. Every case gets *minor* errors, a Poisson
   number per mode (``minor_rates``: expected events per case). A *failure*
   case (the caller decides which; :func:`failure_cases` draws a fixed share)
   also gets ``failure_errors`` *major* errors, modes drawn by
   ``failure_modes`` weights, placed on the ``focus`` organs (those the case's
   dataset does not annotate) when the mode can apply there. The geometry of
   every mode is in :mod:`alqa_core.simulator.error_model.modes`.
2. **Who makes the error.** With probability ``shared_share`` an event is
   made by every member, confidently (p stays 0 or 1 away from the boundary):
   no member disagrees and nobody is unsure, so attention (Eq. 1-3) cannot
   see it: it is reported apart, as the detection floor. Otherwise a minor event is made by each member with
   probability ``member_error_prob`` (at least one member, never all), and a
   major one by a majority of members (never all), as real ensembles fail
   together on a hard case more often than alone.
3. **Boundaries.** No network draws an organ's boundary exactly where the
   truth has it: every member's boundary is displaced by a smooth random
   field (one every member shares, std ``shared_boundary_vox``, plus one of
   its own, std ``member_boundary_vox``; correlation length
   ``boundary_cell_mm``), so the pseudo label has the thin, broken error
   shells around each organ that real pseudo labels have, and members
   disagree on patches of it.
4. **Soft outputs.** Each member's organ mask gives
   ``p0 = sigmoid((d + f) / tau)`` with ``d`` the signed distance (mm) to the
   mask's boundary (positive inside, half a voxel out), ``f`` the member's
   boundary field and ``tau = boundary_softness_vox x`` the finest spacing:
   the voxels either side of a boundary are unsure, as a network's are. Near
   an event an erring member's confidence ``c`` (drawn per member from
   ``0.5 + 0.5 Beta(a, b)``, higher for major errors) squeezes its
   probabilities to ``0.5 + (p0 - 0.5)(2c - 1)``, so entropy carries signal
   where it errs (a confidence of 0.8 gives p = 0.2 or 0.8).
5. **Shared errors**, for the report: ``shared_bits`` marks, per organ, the
   voxels where every member's prediction (p > 0.5) is wrong: there no
   member disagrees, so Eq. 1 cannot fire.

Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import expit

from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.phantoms.deform import control_shape, random_control, upsample
from alqa_core.simulator.error_model.modes import MINOR_MODES, MODE_FUNCTIONS, MODES, applicable_organs
from alqa_core.volume import LabelMap, SoftPrediction, quantize_probabilities


@dataclass(frozen=True)
class ErrorModelConfig:
    """What the simulated ensemble gets wrong, how often, and how sure it is (module doc)."""

    n_members: int = 3
    #: mode -> expected minor events per case (Poisson mean)
    minor_rates: tuple[tuple[str, float], ...] = (
        ("boundary_shift", 1.0), ("hole", 0.2), ("truncation", 0.2), ("fp_blob", 0.3), ("confusion", 0.1),
    )
    #: share of cases drawn as failure cases (:func:`failure_cases`)
    failure_share: float = 0.05
    #: major errors per failure case, inclusive range
    failure_errors: tuple[int, int] = (1, 2)
    #: mode -> weight of a major error's mode
    failure_modes: tuple[tuple[str, float], ...] = (
        ("missed", 0.3), ("confusion", 0.25), ("truncation", 0.25), ("fp_blob", 0.2),
    )
    #: share of events every member makes, confidently (invisible to attention: the detection floor)
    shared_share: float = 0.1
    #: probability that one member makes a non-shared minor event
    member_error_prob: float = 0.5
    #: Beta(a, b) of an erring member's confidence c = 0.5 + 0.5 Beta, minor and major events
    minor_confidence: tuple[float, float] = (2.0, 2.0)
    major_confidence: tuple[float, float] = (4.0, 1.5)
    #: boundary softness tau in voxels of the finest axis (p0 = sigmoid(distance / tau))
    boundary_softness_vox: float = 0.25
    #: std (voxels of the finest axis) of the boundary displacement every member shares, and of each member's own
    shared_boundary_vox: float = 0.5
    member_boundary_vox: float = 0.35
    #: correlation length of the boundary displacement fields (control-grid cell, mm)
    boundary_cell_mm: float = 20.0

    def __post_init__(self):
        def bad(reason):
            return AlqaInputError(None, f"error model: {reason}")

        if isinstance(self.n_members, bool) or not isinstance(self.n_members, int) or self.n_members < 2:
            raise bad(f"n_members must be an integer >= 2 (attention needs disagreement), got {self.n_members!r}")
        for name, table, allowed in (("minor_rates", self.minor_rates, MINOR_MODES), ("failure_modes", self.failure_modes, MODES)):
            pairs = tuple((str(m), float(v)) for m, v in table)
            if any(m not in allowed or not (math.isfinite(v) and v >= 0) for m, v in pairs):
                raise bad(f"{name} must map modes of {list(allowed)} to finite numbers >= 0, got {table!r}")
            object.__setattr__(self, name, pairs)
        if sum(v for _, v in self.failure_modes) <= 0:
            raise bad("failure_modes needs a positive weight")
        for name in ("failure_share", "shared_share", "member_error_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise bad(f"{name} must be in [0, 1], got {value!r}")
        lo, hi = self.failure_errors
        if not (1 <= int(lo) <= int(hi)):
            raise bad(f"failure_errors must be a range 1 <= low <= high, got {self.failure_errors!r}")
        for name in ("minor_confidence", "major_confidence"):
            a, b = getattr(self, name)
            if not (a > 0 and b > 0):
                raise bad(f"{name} must be two Beta parameters > 0, got {getattr(self, name)!r}")
        if not self.boundary_softness_vox > 0:
            raise bad(f"boundary_softness_vox must be > 0, got {self.boundary_softness_vox!r}")
        for name in ("shared_boundary_vox", "member_boundary_vox"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not self.boundary_cell_mm > 0:
            raise bad(f"boundary_cell_mm must be > 0, got {self.boundary_cell_mm!r}")


@dataclass(frozen=True, eq=False)
class ErrorEvent:
    """One error of one case: which mode, organ and members, and the voxels it changes."""

    mode: str
    organ: str
    major: bool
    shared: bool
    members: tuple[int, ...]
    confidences: tuple[float, ...]
    #: other organ involved (a blob's host, the confused organ), "" if none
    other: str = ""
    #: per changed organ: (organ, value, flat indices where the prediction differs from the truth)
    wrong: tuple[tuple[str, bool, np.ndarray], ...] = field(default=())

    @property
    def n_voxels(self) -> int:
        return int(sum(idx.size for _, _, idx in self.wrong))


@dataclass(frozen=True, eq=False)
class ErrorModelCase:
    case_id: str
    members: tuple[SoftPrediction, ...]
    events: tuple[ErrorEvent, ...]
    failure_drawn: bool
    #: uint16 (i, j, k): bit ``table.channel_of(organ)`` set where every member's prediction of that organ is wrong
    shared_bits: np.ndarray

    def shared_mask(self, channel: int) -> np.ndarray:
        return ((self.shared_bits >> np.uint16(channel)) & np.uint16(1)) > 0


def failure_cases(n_cases: int, share: float, seed: int, eligible: Sequence[bool] | None = None) -> np.ndarray:
    """Bool (n_cases,): exactly ``round(share x n_cases)`` failure cases, drawn among ``eligible`` ones."""
    ok = np.ones(n_cases, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    candidates = np.flatnonzero(ok)
    n = min(int(round(share * n_cases)), candidates.size)
    out = np.zeros(n_cases, dtype=bool)
    out[np.random.default_rng([seed, 31]).choice(candidates, size=n, replace=False)] = True
    return out


def _confidence(rng, ab) -> float:
    return float(0.5 + 0.5 * rng.beta(*ab))


def _erring_members(rng, config: ErrorModelConfig, major: bool) -> tuple[int, ...]:
    m = config.n_members
    if major:
        low = m // 2 + 1
        k = int(rng.integers(low, m)) if low <= m - 1 else m - 1
        return tuple(sorted(int(x) for x in rng.choice(m, size=k, replace=False)))
    for _ in range(1000):
        hits = rng.random(m) < config.member_error_prob
        if 0 < hits.sum() < m:
            return tuple(int(x) for x in np.flatnonzero(hits))
    return (int(rng.integers(m)),)


def _event_plan(rng, config: ErrorModelConfig, failure: bool) -> list[tuple[str, bool]]:
    plan = [(mode, False) for mode, rate in config.minor_rates for _ in range(int(rng.poisson(rate)))]
    if failure:
        modes, weights = zip(*config.failure_modes)
        p = np.asarray(weights) / np.sum(weights)
        lo, hi = config.failure_errors
        plan += [(str(modes[rng.choice(len(modes), p=p)]), True) for _ in range(int(rng.integers(lo, hi + 1)))]
    return plan


def _draw_event(mode, major, masks, focus, spacing, rng, config):
    """(mode, organ, result) of one planned event, or None; a major event that cannot apply tries other modes."""
    modes = [mode] + ([m for m, w in config.failure_modes if m != mode and w > 0] if major else [])
    for name in modes:
        organs = applicable_organs(name, masks, major, spacing)
        if major and any(o in focus for o in organs):
            organs = tuple(o for o in organs if o in focus)
        for organ in rng.permutation(np.asarray(organs, dtype=object)) if organs else ():
            result = MODE_FUNCTIONS[name](str(organ), masks, spacing, rng, major)
            if result is not None and any(c.region.any() for c in result.changes):
                return name, str(organ), result
    return None


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    out = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + pad + 1, mask.shape[axis])))
    return tuple(out)


def signed_distance_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """float32: distance (mm) to the boundary, positive inside; the boundary lies half a voxel outside the mask."""
    spacing = tuple(float(s) for s in spacing)
    if not mask.any():
        return np.full(mask.shape, -np.inf, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    half = 0.5 * min(spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.where(mask, inside - half, half - outside).astype(np.float32)


def soft_channel(
    mask: np.ndarray,
    confidence: np.ndarray | None,
    spacing,
    tau_mm: float,
    field_mm: np.ndarray | None = None,
    reach_mm: float = 0.0,
    distances: dict | None = None,
) -> np.ndarray:
    """uint8 ``round(255 p)`` of one organ channel from its mask, boundary field and confidence map (module doc).

    ``reach_mm``: the largest displacement ``field_mm`` may have (the work is
    done on the mask's bounding box padded by it and the soft band).
    ``distances``: a cache of signed distances by mask object, for members
    that share a mask (the caller keeps the masks alive while it is used).
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    support = mask if confidence is None else mask | (confidence < 1.0)
    if not support.any():
        return out
    key = (id(mask), reach_mm) if confidence is None and distances is not None else None
    if key is not None and key in distances:
        box, d = distances[key]
    else:
        box = _bbox(support, int(math.ceil((8.0 * tau_mm + reach_mm) / min(spacing))) + 2)
        d = signed_distance_mm(mask[box], spacing)
        if key is not None:
            distances[key] = (box, d)
    if field_mm is not None:
        d = d + field_mm[box]
    p = expit(d / np.float32(tau_mm)).astype(np.float32)
    if confidence is not None:
        p = np.float32(0.5) + (p - np.float32(0.5)) * (np.float32(2.0) * confidence[box] - np.float32(1.0))
    out[box] = quantize_probabilities(p)
    return out


def _boundary_fields(rng, shape, spacing, config: ErrorModelConfig) -> list[np.ndarray | None]:
    """Per member: the shared plus its own smooth boundary displacement (mm), or None when both are off."""
    unit = min(spacing)
    if config.shared_boundary_vox == 0 and config.member_boundary_vox == 0:
        return [None] * config.n_members
    grid = control_shape(tuple(n * s for n, s in zip(shape, spacing)), config.boundary_cell_mm)

    def field(std_vox):
        return upsample(random_control(rng, grid, sigma_cells=0.7), shape) * np.float32(std_vox * unit)

    shared = field(config.shared_boundary_vox)
    return [shared + field(config.member_boundary_vox) for _ in range(config.n_members)]


def make_members(
    gt: LabelMap,
    table: OrganTable,
    config: ErrorModelConfig = ErrorModelConfig(),
    seed: int | Sequence[int] = 0,
    *,
    failure: bool = False,
    focus: Sequence[str] = (),
    case_id: str = "",
) -> ErrorModelCase:
    """``config.n_members`` soft predictions of ``gt`` (organ-table values) with drawn errors (module doc)."""
    labels = np.asarray(gt.array)
    spacing = gt.spacing_mm
    rng = np.random.default_rng(seed)
    masks = {o.name: labels == o.value for o in table.organs}
    member_masks = [dict(masks) for _ in range(config.n_members)]  # copy-on-write per organ
    confidence: list[dict[str, np.ndarray]] = [{} for _ in range(config.n_members)]
    shared_bits = np.zeros(labels.shape, dtype=np.uint16)
    events = []
    for mode, major in _event_plan(rng, config, failure):
        drawn = _draw_event(mode, major, masks, set(focus), spacing, rng, config)
        if drawn is None:
            continue
        name, organ, result = drawn
        shared = bool(rng.random() < config.shared_share)
        who = tuple(range(config.n_members)) if shared else _erring_members(rng, config, major)
        conf = tuple(1.0 if shared else _confidence(rng, config.major_confidence if major else config.minor_confidence) for _ in who)
        wrong = []
        for change in result.changes:
            differs = change.region & (masks[change.organ] != change.value)
            wrong.append((change.organ, bool(change.value), np.flatnonzero(differs).astype(np.int64)))
            near = ndimage.binary_dilation(change.region) if not shared else None
            for m, c in zip(who, conf):
                updated = member_masks[m][change.organ].copy()
                updated[change.region] = change.value
                member_masks[m][change.organ] = updated
                if near is not None:
                    current = confidence[m].get(change.organ)
                    current = np.ones(labels.shape, dtype=np.float32) if current is None else current
                    confidence[m][change.organ] = np.where(near, np.minimum(current, np.float32(c)), current)
        events.append(ErrorEvent(name, organ, major, shared, who, conf, result.other, tuple(wrong)))

    tau = config.boundary_softness_vox * min(spacing)
    fields = _boundary_fields(rng, labels.shape, spacing, config)
    reach = 4.0 * (config.shared_boundary_vox + config.member_boundary_vox) * min(spacing)
    members, distances = [], {}
    for m in range(config.n_members):
        channels = [soft_channel(member_masks[m][o], confidence[m].get(o), spacing, tau, fields[m], reach, distances) for o in table.names]
        members.append(SoftPrediction(np.stack(channels), gt.affine, table.names, member=f"error_model_{m}"))
    for c, o in enumerate(table.names):  # every member wrong (p > 0.5 is stored >= 128)
        wrong = np.ones(labels.shape, dtype=bool)
        for member in members:
            wrong &= (member.array[c] >= 128) != masks[o]
        shared_bits[wrong] |= np.uint16(1 << c)
    return ErrorModelCase(case_id, tuple(members), tuple(events), bool(failure), shared_bits)


__all__ = ["ErrorEvent", "ErrorModelCase", "ErrorModelConfig", "failure_cases", "make_members", "signed_distance_mm", "soft_channel"]
