"""Slice strategies: which slices to annotate next, at a fixed effort budget (USS, RSS, foreground-aware random).

The four strategies of 004_03246784a706ec26.txt §II.E, plus nnActive's
foreground-aware random baseline. Each is a pure function

    strategy(pool, budget, *, seed, exclude_cases, effort_model, ...) -> Selection

of the pool's :class:`~alqa_core.strategies.uncertainty.CaseUncertainty`
records (uncertainty curves, volume uncertainties, slice counts, predicted
foreground, slices already annotated), a budget in effort units
(:mod:`alqa_core.strategies.effort_model`: a case's first slice costs 1, each
further slice of it 1/3), a seed, and case ids to leave out. Results do not
depend on the order of ``pool``: cases are handled in ``case_id`` order and
every random choice comes from ``numpy.random.default_rng(seed)``.

- **USS** (uncertainty slice sampling): the candidates of every case (local
  maxima of its slice-uncertainty curve, >= ``min_distance`` = 5 slices apart,
  :func:`~alqa_core.strategies.uncertainty.candidate_slices`), ranked across
  the whole pool by their uncertainty, highest first (ties: case_id, slice).
  A candidate that is annotated already or closer than ``min_distance`` to an
  annotated slice is not a peak. Once the pool's peaks are spent and budget
  is left, USS goes on down each curve (:func:`uss_order`): the next most
  uncertain open slices that keep ``min_distance`` from every slice picked or
  annotated, then, in further passes, at half that distance, and so on down
  to 1, each pass ranked across the pool. 004 adds a fixed N_S = Ñ/3 slices
  per iteration, sized to the effort of the volume strategies, and ranks
  them by uncertainty (its Fig. 4(d) shows "the lowest uncertainty among
  selected ones"); the distance exists "to avoid selecting neighboring
  slices". The peaks alone can run out (a pool of short, smooth curves has
  few), which left most of a round's budget unspent; going on down the
  ranking spends it, keeps the distance as long as possible, and leaves the
  budget unspent only when no open slice is left.
- **RSS** (random slice sampling): open slices of the pool in uniformly random order.
- **fg_random** (nnActive's "Foreground Aware Random", Lüth et al. 2025):
  each draw, with probability ``foreground_share`` picks an open slice with
  probability proportional to its predicted foreground voxels, otherwise a
  uniformly random open slice. nnActive's ``random-label`` strategy draws a
  patch centred on a random foreground voxel (inside or on the border of the
  segmentation) in 2 of 3 draws and a uniform patch in 1 of 3, so the default
  share is 2/3 (``"fg_random"``); its ``random-label2`` uses 1/3
  (``"fg_random_33"``). A draw centred on a random foreground voxel picks a
  slice with probability proportional to its foreground count, which is what
  the weights here are. nnActive queries 3D patches from ground-truth labels;
  here the unit is an axial slice and the foreground is whatever the caller
  puts in ``slice_foreground`` (predicted, or true labels in a simulation).
"""

from __future__ import annotations

from typing import Collection, Iterator, Sequence

import numpy as np

from alqa_core.strategies.effort_model import DEFAULT_EFFORT_MODEL, EffortModel
from alqa_core.strategies.selection import Selection, check_budget, eligible_cases, fill_slices, open_pairs, pairs_in_order
from alqa_core.strategies.uncertainty import MIN_PEAK_DISTANCE_SLICES, CaseUncertainty, candidate_slices

#: nnActive ``random-label``: one of {all, seg, border} uniformly -> 2/3 foreground-centred draws.
NNACTIVE_FOREGROUND_SHARE = 2.0 / 3.0


def mixture_order(weights: np.ndarray, share: float, rng: np.random.Generator) -> Iterator[int]:
    """Sequential draws without replacement: with prob ``share`` proportional to ``weights``, else uniform.

    The weighted stream is a weighted random permutation (Efraimidis & Spirakis:
    sort by ``Exp(1) / w``), which equals successive draws proportional to the
    weights of the items left; the uniform stream is a random permutation. Each
    draw flips a coin for its stream and takes that stream's next item not yet
    drawn; once the weighted stream runs out, draws are uniform.
    """
    n = weights.size
    uniform = rng.permutation(n)
    positive = np.flatnonzero(weights > 0)
    keys = rng.exponential(size=positive.size) / weights[positive]
    weighted = positive[np.argsort(keys, kind="stable")]
    drawn = np.zeros(n, dtype=bool)
    u = w = 0
    while True:
        take_weighted = w < weighted.size and share > 0 and rng.random() < share
        if take_weighted:
            while w < weighted.size and drawn[weighted[w]]:
                w += 1
            if w < weighted.size:
                i = int(weighted[w])
                drawn[i] = True
                yield i
                continue
        while u < n and drawn[uniform[u]]:
            u += 1
        if u >= n:
            return
        i = int(uniform[u])
        drawn[i] = True
        yield i


def uncertainty_slice_sampling(
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
    min_distance: int = MIN_PEAK_DISTANCE_SLICES,
) -> Selection:
    """USS: the pool's most uncertain slice candidates, then the next-best spaced slices (deterministic; ``seed`` is unused)."""
    budget = check_budget(budget)
    cases = eligible_cases(pool, exclude_cases)
    ranked: list[tuple[int, float, str, int]] = []
    for case in cases:
        if case.slice_uncertainty is None:
            raise ValueError(f"case {case.case_id}: USS needs its slice_uncertainty curve")
        ranked += [(tier, -float(case.slice_uncertainty[s]), case.case_id, s) for tier, s in uss_order(case, min_distance)]
    ranked.sort()
    return fill_slices("uss", cases, ((c, s) for _, _, c, s in ranked), budget, effort_model)


def _relaxed_distances(min_distance: int) -> list[int]:
    """min_distance, then halved (rounded up) down to 1: 5 -> [5, 3, 2, 1]."""
    out, d = [], max(int(min_distance), 1)
    while True:
        out.append(d)
        if d == 1:
            return out
        d = (d + 1) // 2


def uss_order(case: CaseUncertainty, min_distance: int = MIN_PEAK_DISTANCE_SLICES) -> list[tuple[int, int]]:
    """Every open slice of ``case`` as ``(tier, slice)``: tier 0 the curve's peaks, then the fallback passes (module doc).

    Tier 0: :func:`candidate_slices` at least ``min_distance`` from every
    annotated slice. Tier i >= 1: the open slices left, most uncertain first
    (ties: lower index), taken while they keep the i-th distance of
    ``min_distance, ceil(min_distance / 2), ..., 1`` from every slice already
    annotated or in an earlier tier or pick. The last pass (distance 1) takes
    every open slice left.
    """
    curve = case.slice_uncertainty
    n = case.n_slices
    taken = np.zeros(n, dtype=bool)
    taken[list(case.annotated_slices)] = True
    out: list[tuple[int, int]] = []

    def far(s: int, d: int) -> bool:
        return not taken[max(s - d + 1, 0) : s + d].any()

    for s in candidate_slices(curve, min_distance):
        if far(s, min_distance):  # peaks keep their distance from annotated slices only (the peaks are spaced already)
            out.append((0, s))
    for s in (s for _, s in out):
        taken[s] = True
    order = np.lexsort((np.arange(n), -np.asarray(curve, dtype=np.float64)))
    for tier, d in enumerate(_relaxed_distances(min_distance), start=1):
        for s in order:
            s = int(s)
            if not taken[s] and far(s, d):
                taken[s] = True
                out.append((tier, s))
    return out


def random_slice_sampling(
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
) -> Selection:
    """RSS: open slices of the pool in uniformly random order."""
    budget = check_budget(budget)
    cases = eligible_cases(pool, exclude_cases)
    case_idx, slices = open_pairs(cases)
    order = np.random.default_rng(seed).permutation(case_idx.size)
    return fill_slices("rss", cases, pairs_in_order(cases, case_idx, slices, iter(order)), budget, effort_model)


def foreground_random_sampling(
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
    foreground_share: float = NNACTIVE_FOREGROUND_SHARE,
) -> Selection:
    """nnActive's foreground-aware random: a ``foreground_share`` of draws proportional to slice foreground.

    The rest (``1 - foreground_share``) are uniform over open slices. Cases
    without ``slice_foreground`` have weight 0 (reachable by uniform draws only).
    """
    budget = check_budget(budget)
    if not 0.0 <= foreground_share <= 1.0:
        raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share}")
    cases = eligible_cases(pool, exclude_cases)
    case_idx, slices = open_pairs(cases)
    per_case = [
        np.zeros(len(c.open_slices())) if c.slice_foreground is None else c.slice_foreground[c.open_slices()]
        for c in cases
    ]
    weights = np.concatenate(per_case) if per_case else np.zeros(0)
    order = mixture_order(weights, float(foreground_share), np.random.default_rng(seed))
    return fill_slices("fg_random", cases, pairs_in_order(cases, case_idx, slices, order), budget, effort_model)
