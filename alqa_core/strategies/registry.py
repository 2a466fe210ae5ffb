"""Query strategies by name: :data:`STRATEGIES` is a table, :func:`select` the one entry point that takes a name.

The four strategies of 004_03246784a706ec26.txt §II.E (:mod:`.slice_sampling`: USS, RSS;
:mod:`.volume_sampling`: UVS, RVS), plus nnActive's foreground-aware random baseline. Each is a pure function

    strategy(pool, budget, *, seed, exclude_cases, effort_model, ...) -> Selection

of the pool's :class:`~alqa_core.strategies.uncertainty.CaseUncertainty` records, a budget in effort
units, a seed and case ids to leave out. Results do not depend on the order of ``pool``: cases are
handled in ``case_id`` order and every random choice comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from types import MappingProxyType
from typing import Collection, Mapping, Sequence

from alqa_core.strategies.effort_model import DEFAULT_EFFORT_MODEL, EffortModel
from alqa_core.strategies.selection import Selection, StrategyFn
from alqa_core.strategies.slice_sampling import foreground_random_sampling, random_slice_sampling, uncertainty_slice_sampling
from alqa_core.strategies.uncertainty import CaseUncertainty
from alqa_core.strategies.volume_sampling import random_volume_sampling, uncertainty_volume_sampling

#: name -> strategy function (extra options as keyword arguments).
STRATEGIES: Mapping[str, StrategyFn] = MappingProxyType(
    {
        "uss": uncertainty_slice_sampling,
        "rss": random_slice_sampling,
        "uvs": uncertainty_volume_sampling,
        "rvs": random_volume_sampling,
        "fg_random": foreground_random_sampling,
        "fg_random_33": functools.partial(foreground_random_sampling, foreground_share=1.0 / 3.0),
    }
)


def select(
    strategy: str,
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int = 0,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
    **options,
) -> Selection:
    """Run the strategy named ``strategy`` (a key of :data:`STRATEGIES`); the result carries that name."""
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise KeyError(f"unknown selection strategy {strategy!r}; known: {sorted(STRATEGIES)}") from None
    result = fn(pool, budget, seed=seed, exclude_cases=exclude_cases, effort_model=effort_model, **options)
    return replace(result, strategy=strategy)


__all__ = ["STRATEGIES", "select"]
