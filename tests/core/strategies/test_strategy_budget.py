"""Strategies spend their budget: budget is left only when no candidate that fits is left (USS, RSS, UVS, RVS)."""

from __future__ import annotations

import numpy as np
import pytest

from alqa_core.strategies.effort_model import BUDGET_EPS, EffortModel, case_effort
from alqa_core.strategies.registry import select
from alqa_core.strategies.slice_sampling import uss_order
from alqa_core.strategies.uncertainty import CaseUncertainty

SLICE_STRATEGIES = ("uss", "rss")
VOLUME_STRATEGIES = ("uvs", "rvs")


def _curve(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    k = np.arange(n)
    if kind == "bump":  # one smooth peak: one USS candidate per case
        return np.exp(-0.5 * ((k - rng.uniform(0, n)) / max(n / 6, 1)) ** 2)
    if kind == "flat":
        return np.full(n, 0.2)
    return rng.random(n)


def _pool(seed: int) -> tuple[list[CaseUncertainty], set[str]]:
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(int(rng.integers(1, 12))):
        n = int(rng.integers(1, 40))
        done = tuple(sorted(set(rng.integers(0, n, size=int(rng.integers(0, 4))).tolist()))) if rng.random() < 0.5 else ()
        if len(done) == n:
            done = ()
        pool.append(CaseUncertainty(f"c{i:02d}", n, _curve(rng, n, str(rng.choice(["bump", "flat", "noise"]))), float(rng.random()),
                                    annotated_slices=done))
    exclude = {c.case_id for c in pool if rng.random() < 0.15}
    return pool, exclude


def _left_candidates(strategy, pool, exclude, selection, model) -> list[float]:
    """Marginal cost of every candidate the selection did not take (slices, or whole volumes)."""
    costs = []
    for case in pool:
        if case.case_id in exclude:
            continue
        picked = set(selection.slices_of(case.case_id))
        open_left = [int(s) for s in case.open_slices() if int(s) not in picked]
        if not open_left:
            continue
        if strategy in VOLUME_STRATEGIES:
            if not picked:  # a volume is one candidate: all its open slices
                costs.append(case_effort(open_left, model))
        else:
            costs.append(model.further_slice if picked else model.first_slice)
    return costs


@pytest.mark.parametrize("strategy", SLICE_STRATEGIES + VOLUME_STRATEGIES)
@pytest.mark.parametrize("model", [EffortModel(), EffortModel(further_slice=1.0)], ids=["third", "flat"])
def test_budget_is_left_only_when_no_candidate_fits(strategy, model):
    checked = 0
    for seed in range(60):
        pool, exclude = _pool(seed)
        budget = float(np.random.default_rng(seed + 1000).uniform(0.5, 40.0))
        sel = select(strategy, pool, budget, seed=seed, exclude_cases=exclude, effort_model=model)
        assert sel.effort_slices <= budget + BUDGET_EPS
        left = budget - sel.effort_slices
        costs = _left_candidates(strategy, pool, exclude, sel, model)
        assert all(c > left + BUDGET_EPS for c in costs), (seed, budget, sel.effort_slices, sorted(costs)[:3])
        checked += bool(costs)
    assert checked >= 20  # the rule was exercised with candidates left over, not only on exhausted pools


def test_uss_spends_a_budget_its_peaks_cannot_fill():
    # 20 cases of 30 slices, each curve a single smooth bump: 20 peaks cost 20 units, the budget is 30
    rng = np.random.default_rng(7)
    pool = [CaseUncertainty(f"v{i:02d}", 30, _curve(rng, 30, "bump")) for i in range(20)]
    peaks_only = sum(1 for c in pool for tier, _ in uss_order(c) if tier == 0)
    assert peaks_only == 20
    sel = select("uss", pool, 30.0)
    assert sel.effort_slices == pytest.approx(30.0)
    # the peaks come first, and the extra slices keep 5 slices apart within each case
    for item in sel.items:
        assert all(b - a >= 5 for a, b in zip(item.slices, item.slices[1:]))
    case = pool[0]
    assert uss_order(case)[0] == (0, int(np.argmax(case.slice_uncertainty)))


def test_uss_order_covers_every_open_slice_once_and_respects_annotations():
    curve = np.random.default_rng(3).random(25)
    case = CaseUncertainty("a", 25, curve, annotated_slices=(4, 11))
    order = uss_order(case)
    slices = [s for _, s in order]
    assert sorted(slices) == [s for s in range(25) if s not in (4, 11)]
    tiers = [t for t, _ in order]
    assert tiers == sorted(tiers)
    # tier 1 keeps 5 slices from every annotated slice and every earlier pick
    earlier = {4, 11} | {s for t, s in order if t == 0}
    for t, s in order:
        if t == 1:
            assert min(abs(s - e) for e in earlier) >= 5
            earlier.add(s)
