"""Volume strategies: which whole volumes to annotate next, at a fixed effort budget (004 §II.E).

- **UVS** (uncertainty volume sampling): whole volumes by volume uncertainty, highest first.
- **RVS** (random volume sampling): whole volumes in uniformly random order.

A volume takes every open (not yet annotated) slice of its case.
"""

from __future__ import annotations

import math
from typing import Collection, Sequence

import numpy as np

from alqa_core.strategies.effort_model import BUDGET_EPS, DEFAULT_EFFORT_MODEL, EffortModel, case_effort
from alqa_core.strategies.selection import Selection, check_budget, eligible_cases, finish_selection, foreground_map
from alqa_core.strategies.uncertainty import CaseUncertainty


def fill_volumes(
    name: str, cases: Sequence[CaseUncertainty], order: Sequence[int], budget: float, model: EffortModel
) -> Selection:
    fg = foreground_map(cases, model)
    picked: dict[str, list[int]] = {}
    costs: list[float] = []
    for i in order:
        case = cases[int(i)]
        slices = case.open_slices()
        cost = case_effort(slices, model, fg.get(case.case_id))
        if math.fsum(costs) + cost <= budget + BUDGET_EPS:
            costs.append(cost)
            picked[case.case_id] = [int(s) for s in slices]
    return finish_selection(name, picked, cases, model)


def uncertainty_volume_sampling(
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
) -> Selection:
    """UVS: whole volumes by volume uncertainty, highest first (deterministic; ``seed`` is unused)."""
    budget = check_budget(budget)
    cases = eligible_cases(pool, exclude_cases)
    missing = [c.case_id for c in cases if c.volume_uncertainty is None]
    if missing:
        raise ValueError(f"UVS needs volume_uncertainty for every case; missing for {missing}")
    order = sorted(range(len(cases)), key=lambda i: (-cases[i].volume_uncertainty, cases[i].case_id))
    return fill_volumes("uvs", cases, order, budget, effort_model)


def random_volume_sampling(
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
) -> Selection:
    """RVS: whole volumes in uniformly random order."""
    budget = check_budget(budget)
    cases = eligible_cases(pool, exclude_cases)
    order = np.random.default_rng(seed).permutation(len(cases))
    return fill_volumes("rvs", cases, order, budget, effort_model)
