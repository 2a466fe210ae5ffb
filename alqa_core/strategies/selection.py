"""What a query strategy returns, and the helpers every strategy shares (eligible cases, budget filling).

:class:`Selection` is the result of every strategy (:mod:`.slice_sampling`,
:mod:`.volume_sampling`, looked up by name in :mod:`.registry`): items in the
order their cases were first picked, with their effort in slice units
(:mod:`alqa_core.strategies.effort_model`).

Budget filling (all strategies): proposals are taken in the strategy's order
while their marginal effort fits; one that does not fit is skipped and the
next is tried (a same-volume slice at 1/3 may still fit after a new volume at
1 did not; a smaller volume after a larger one). So strategies compare at
equal effort, never exceeding the budget. Whole volumes take every open
(not yet annotated) slice of the case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterator, Mapping, Sequence

import numpy as np

from alqa_core.strategies.effort_model import DEFAULT_EFFORT_MODEL, BudgetFiller, EffortModel, case_effort
from alqa_core.strategies.uncertainty import CaseUncertainty


@dataclass(frozen=True)
class SliceSelection:
    """Slices of one case to annotate (sorted, unique, >= 0)."""

    case_id: str
    slices: tuple[int, ...]

    def __post_init__(self):
        slices = tuple(sorted(set(int(s) for s in self.slices)))
        if not slices or slices[0] < 0:
            raise ValueError(f"case {self.case_id}: a slice selection needs >= 1 slice index >= 0, got {self.slices}")
        object.__setattr__(self, "slices", slices)


@dataclass(frozen=True)
class Selection:
    """What a strategy chose: items in the order their cases were first picked, and their effort (slice units)."""

    strategy: str
    items: tuple[SliceSelection, ...]
    effort_slices: float

    def __post_init__(self):
        object.__setattr__(self, "items", tuple(self.items))
        ids = [item.case_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a selection lists each case once; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(item.case_id for item in self.items)

    @property
    def n_slices(self) -> int:
        return sum(len(item.slices) for item in self.items)

    def slices_of(self, case_id: str) -> tuple[int, ...]:
        for item in self.items:
            if item.case_id == case_id:
                return item.slices
        return ()

    def to_records(self) -> list[dict]:
        """One row per (case, slice): ``strategy, case_id, slice, pick_order`` (pick_order = the case's rank)."""
        return [
            {"strategy": self.strategy, "case_id": item.case_id, "slice": s, "pick_order": rank}
            for rank, item in enumerate(self.items)
            for s in item.slices
        ]


StrategyFn = Callable[..., Selection]


# --------------------------------------------------------------------------- helpers


def eligible_cases(pool: Sequence[CaseUncertainty], exclude_cases: Collection[str]) -> list[CaseUncertainty]:
    """Pool cases not excluded and with an open slice, in case_id order; ValueError on duplicate ids."""
    ids = [c.case_id for c in pool]
    if len(set(ids)) != len(ids):
        raise ValueError(f"pool lists a case twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    excluded = set(exclude_cases)
    cases = [c for c in pool if c.case_id not in excluded and len(c.annotated_slices) < c.n_slices]
    return sorted(cases, key=lambda c: c.case_id)


def effort(
    selection: Selection,
    model: EffortModel = DEFAULT_EFFORT_MODEL,
    foreground: Mapping[str, np.ndarray] | None = None,
) -> float:
    """Effort of a selection in slice units: the sum of :func:`case_effort` over its cases.

    ``foreground``: case_id -> bool (n_slices,) "slice has foreground", used
    only when ``model.empty_slice`` is a number (004's second assumption).
    """
    fg = foreground or {}
    return float(sum(case_effort(item.slices, model, fg.get(item.case_id)) for item in selection.items))


def foreground_map(cases: Sequence[CaseUncertainty], model: EffortModel) -> dict[str, np.ndarray]:
    """case_id -> "slice has foreground" flags, only when the effort model prices empty slices."""
    if model.empty_slice is None:
        return {}
    return {c.case_id: c.foreground_flags() for c in cases if c.slice_foreground is not None}


def finish_selection(name: str, picked: Mapping[str, Sequence[int]], cases: Sequence[CaseUncertainty], model: EffortModel) -> Selection:
    items = tuple(SliceSelection(case_id, tuple(slices)) for case_id, slices in picked.items() if slices)
    draft = Selection(name, items, 0.0)
    return replace(draft, effort_slices=effort(draft, model, foreground_map(cases, model)))


def fill_slices(
    name: str, cases: Sequence[CaseUncertainty], proposals: Iterator[tuple[str, int]], budget: float, model: EffortModel
) -> Selection:
    filler = BudgetFiller(budget, model, foreground_map(cases, model)).fill(proposals)
    return finish_selection(name, filler.picked, cases, model)


def open_pairs(cases: Sequence[CaseUncertainty]) -> tuple[np.ndarray, np.ndarray]:
    """All open (case index, slice) pairs, case_id order then slice order."""
    opened = [c.open_slices() for c in cases]
    case_idx = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(opened)] or [np.zeros(0, np.int64)])
    slices = np.concatenate(opened or [np.zeros(0, np.int64)]).astype(np.int64)
    return case_idx, slices


def pairs_in_order(cases, case_idx, slices, order: Iterator[int]) -> Iterator[tuple[str, int]]:
    for i in order:
        yield cases[int(case_idx[i])].case_id, int(slices[i])


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


def check_budget(budget: float) -> float:
    b = float(budget)
    if not math.isfinite(b) or b < 0:
        raise ValueError(f"budget must be finite and >= 0 effort units, got {budget}")
    return b


__all__ = [
    "Selection",
    "SliceSelection",
    "StrategyFn",
    "check_budget",
    "effort",
    "eligible_cases",
    "fill_slices",
    "finish_selection",
    "foreground_map",
    "open_pairs",
    "pairs_in_order",
]
