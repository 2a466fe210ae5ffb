"""Early stopping on validation Dice, as in 000_3a3cb93e44d13ddd.txt §2.2.3.

"When the average Dice score ... did not increase by more than 0.001 in 10
epochs, the epoch that produced the highest Dice score ... was selected."
Read literally: after epoch ``t`` (0-based) training stops when
``best(t) - best(t - patience) <= min_delta``, where ``best(t)`` is the
highest Dice of epochs ``0..t``; the weights kept are those of the epoch with
the highest Dice (the first such epoch on ties). Epochs without a Dice (NaN:
nothing to validate) never count as improvements.

Pure functions over the Dice history plus a small frozen state, so the rule
is testable on a scripted sequence without training anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def running_best(values: Sequence[float]) -> list[float]:
    """``best[t] = max(values[0..t])``, NaN treated as -inf."""
    out, best = [], -math.inf
    for v in values:
        if v is not None and not math.isnan(v):
            best = max(best, float(v))
        out.append(best)
    return out


def best_epoch(values: Sequence[float]) -> int | None:
    """Index of the highest value (first on ties); None if every value is NaN."""
    best_i, best_v = None, -math.inf
    for i, v in enumerate(values):
        if v is not None and not math.isnan(v) and v > best_v:
            best_i, best_v = i, float(v)
    return best_i


def should_stop(values: Sequence[float], min_delta: float = 0.001, patience: int = 10) -> bool:
    """True when the best value has not risen by more than ``min_delta`` over the last ``patience`` epochs."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    t = len(values) - 1
    if t < patience:
        return False
    best = running_best(values)
    return not (best[t] - best[t - patience] > min_delta)


@dataclass(frozen=True)
class EarlyStopping:
    """Immutable tracker: ``state = state.update(dice)`` after each epoch."""

    min_delta: float = 0.001
    patience: int = 10
    history: tuple[float, ...] = ()

    def update(self, value: float) -> "EarlyStopping":
        return EarlyStopping(self.min_delta, self.patience, self.history + (float(value),))

    @property
    def best_epoch(self) -> int | None:
        return best_epoch(self.history)

    @property
    def best_value(self) -> float:
        i = self.best_epoch
        return math.nan if i is None else self.history[i]

    @property
    def improved(self) -> bool:
        """The last epoch is the new best (its weights should be kept)."""
        return bool(self.history) and self.best_epoch == len(self.history) - 1

    @property
    def stop(self) -> bool:
        return should_stop(self.history, self.min_delta, self.patience)


__all__ = ["EarlyStopping", "best_epoch", "running_best", "should_stop"]
