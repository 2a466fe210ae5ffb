"""The annotation-effort model that lets slice and volume strategies compare at equal cost.

004_03246784a706ec26.txt (§"Annotation effort" assumptions) observes that
"the effort required for annotation of N slices with liver in one image
volume is approx. equal to the annotation effort of N/3 slices with liver
coming from different volumes" (with interpolating tools one draws contours
on about every third slice), and that "the effort required for a slice
without a liver is negligible".

The formula used here, in **slice units** (1 unit = one slice annotated in a
volume nobody else in this selection touches):

    effort(case with n > 0 selected slices) = first_slice + (n - 1) * further_slice
    effort(selection)                       = sum over its cases

with ``first_slice = 1`` and ``further_slice = 1/3``. So N slices from N
different volumes cost N, N slices of ONE volume cost 1 + (N - 1)/3 ~ N/3,
and a whole volume of K slices costs 1 + (K - 1)/3. Every selection
strategy fills its budget in these units, which is how 004 sized its
experiments (5 volumes of ~576 liver slices per UVS iteration vs N_S =
576/3 ~ 200 USS slices).

004's second assumption is optional (``empty_slice``): when it is a number
and the caller says which slices contain foreground, slices WITHOUT
foreground cost ``empty_slice`` each (004: negligible, i.e. 0) and do not
count towards ``n``; the first foreground slice of a case costs
``first_slice``. With ``empty_slice=None`` (the default) every slice counts.

Costs are computed from counts, never by accumulating floats, so budget
checks do not drift (``1/3 * 3`` compares equal to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import numpy as np

#: Budget comparisons allow this much float slack (effort units).
BUDGET_EPS = 1e-9


@dataclass(frozen=True)
class EffortModel:
    """Cost of annotating slices, in slice units (see module doc for the formula)."""

    first_slice: float = 1.0
    further_slice: float = 1.0 / 3.0
    empty_slice: float | None = None

    def __post_init__(self):
        if not (self.first_slice > 0 and self.further_slice >= 0):
            raise ValueError(f"first_slice must be > 0 and further_slice >= 0, got {self.first_slice}, {self.further_slice}")
        if self.empty_slice is not None and self.empty_slice < 0:
            raise ValueError(f"empty_slice must be >= 0 or None, got {self.empty_slice}")

    def case_cost(self, n_slices: int, n_empty: int = 0) -> float:
        """Effort of ``n_slices`` (foreground or counted) + ``n_empty`` empty slices of one case."""
        if n_slices < 0 or n_empty < 0:
            raise ValueError(f"slice counts must be >= 0, got {n_slices}, {n_empty}")
        counted = 0.0 if n_slices == 0 else self.first_slice + (n_slices - 1) * self.further_slice
        return counted + (n_empty * self.empty_slice if n_empty else 0.0)


#: The model of 004: first slice of a volume 1, each further slice 1/3, every slice counted.
DEFAULT_EFFORT_MODEL = EffortModel()


def volume_effort(n_slices: int, model: EffortModel = DEFAULT_EFFORT_MODEL) -> float:
    """Effort of a whole volume of ``n_slices`` slices: ``1 + (K - 1)/3`` with the default model."""
    return model.case_cost(int(n_slices))


def _is_counted(model: EffortModel, foreground: np.ndarray | None, slice_index: int) -> bool:
    """Whether a slice counts as an annotated (foreground) slice under ``model``."""
    if model.empty_slice is None or foreground is None:
        return True
    return bool(foreground[slice_index])


def case_effort(
    slices: Iterable[int], model: EffortModel = DEFAULT_EFFORT_MODEL, foreground: np.ndarray | None = None
) -> float:
    """Effort of annotating ``slices`` of one case. ``foreground``: bool (n_slices,), used only with ``model.empty_slice``."""
    n_counted = n_empty = 0
    for s in set(int(s) for s in slices):
        if _is_counted(model, foreground, s):
            n_counted += 1
        else:
            n_empty += 1
    return model.case_cost(n_counted, n_empty)


class BudgetFiller:
    """Greedy budget filling over a stream of (case_id, slice) proposals.

    Each proposal is taken when its MARGINAL cost (``first_slice`` if it is the
    case's first counted slice in this selection, ``further_slice`` otherwise,
    ``empty_slice`` for an empty slice) still fits in the budget; a proposal
    that does not fit is skipped and the next one is tried (a cheaper
    same-volume slice may still fit). Used by every slice strategy.
    """

    def __init__(self, budget: float, model: EffortModel, foreground: Mapping[str, np.ndarray] | None = None):
        if not np.isfinite(budget) or budget < 0:
            raise ValueError(f"budget must be finite and >= 0 (effort units), got {budget}")
        self.budget = float(budget)
        self.model = model
        self._fg = foreground or {}
        self._counted: dict[str, int] = {}
        self.picked: dict[str, list[int]] = {}  # insertion order = order of first pick
        self._taken: set[tuple[str, int]] = set()
        self._n_counted = 0  # running totals, so each offer is O(1)
        self._n_empty = 0

    @property
    def spent(self) -> float:
        """Effort taken so far, from counts (no float accumulation)."""
        m = self.model
        n_cases = len(self._counted)
        empty = self._n_empty * m.empty_slice if self._n_empty else 0.0
        return n_cases * m.first_slice + (self._n_counted - n_cases) * m.further_slice + empty

    def _marginal(self, case_id: str, slice_index: int) -> tuple[float, bool]:
        counted = _is_counted(self.model, self._fg.get(case_id), slice_index)
        if not counted:
            return float(self.model.empty_slice), False
        first = case_id not in self._counted
        return (self.model.first_slice if first else self.model.further_slice), True

    @property
    def exhausted(self) -> bool:
        """True when not even the cheapest possible slice fits any more."""
        m = self.model
        cheapest = min(m.first_slice, m.further_slice) if self._counted else m.first_slice
        if m.empty_slice is not None and self._fg:
            cheapest = min(cheapest, m.empty_slice)
        return self.spent + cheapest > self.budget + BUDGET_EPS

    def offer(self, case_id: str, slice_index: int) -> bool:
        """Take the slice if it is new and fits; return whether it was taken."""
        key = (case_id, int(slice_index))
        if key in self._taken:
            return False
        cost, counted = self._marginal(case_id, int(slice_index))
        if self.spent + cost > self.budget + BUDGET_EPS:
            return False
        self._taken.add(key)
        if counted:
            self._counted[case_id] = self._counted.get(case_id, 0) + 1
            self._n_counted += 1
        else:
            self._n_empty += 1
        self.picked.setdefault(case_id, []).append(int(slice_index))
        return True

    def fill(self, proposals: Iterator[tuple[str, int]]) -> "BudgetFiller":
        """Offer proposals until the stream ends or nothing can fit any more."""
        for case_id, slice_index in proposals:
            if self.exhausted:
                break
            self.offer(case_id, slice_index)
        return self


__all__ = [
    "BUDGET_EPS",
    "DEFAULT_EFFORT_MODEL",
    "BudgetFiller",
    "EffortModel",
    "case_effort",
    "volume_effort",
]
