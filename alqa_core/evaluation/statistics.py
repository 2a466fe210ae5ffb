"""Summaries and paired tests of per-case metrics.

- :func:`describe`: n, mean ± sd (sample sd, ddof=1), 5th/50th/95th
  percentiles (numpy, linear interpolation), as 004 reports them (5th
  percentile for Dice, 95th for the distances). NaNs are left out and
  counted in ``n_missing``.
- :func:`summarize`: :func:`describe` per organ and metric over any frozen
  per-organ records (:class:`~alqa_core.evaluation.segmentation.OrganMetrics`,
  :class:`~alqa_core.evaluation.attention_eval.AttentionScore`).
- :func:`paired_tests`: two models (or rounds) on the same cases, a paired
  t-test (``scipy.stats.ttest_rel``, as 000) and a Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``, as 004).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: Columns of a table of paired tests between strategies (or rounds) on the same cases, one row per (strategy, baseline, round).
PAIRED_COLUMNS = ("strategy", "baseline", "round", "n", "mean_diff", "t", "p_t", "w", "p_wilcoxon")

#: The metrics :func:`summarize` reports for OrganMetrics by default.
SEGMENTATION_METRICS = ("dice", "nsd", "hd95_mm", "hd_mm", "msd_mm", "rve")


@dataclass(frozen=True)
class Description:
    n: int
    n_missing: int
    mean: float
    sd: float
    p5: float
    p50: float
    p95: float


def describe(values: Sequence[float]) -> Description:
    """n, mean, sample sd, 5th/50th/95th percentiles of the finite values.

    NaN values are dropped (counted in ``n_missing``); +-inf is kept and
    propagates. ``sd`` is NaN for n < 2; everything is NaN for n = 0.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = v[~np.isnan(v)]
    n = int(keep.size)
    if n == 0:
        nan = float("nan")
        return Description(0, int(v.size), nan, nan, nan, nan, nan)
    p5, p50, p95 = (float(x) for x in np.percentile(keep, [5, 50, 95]))
    sd = float(np.std(keep, ddof=1)) if n > 1 else float("nan")
    return Description(n, int(v.size - n), float(np.mean(keep)), sd, p5, p50, p95)


@dataclass(frozen=True)
class MetricSummary:
    organ: str
    metric: str
    n: int
    n_missing: int
    mean: float
    sd: float
    p5: float
    p50: float
    p95: float

    def to_record(self) -> dict:
        return asdict(self)


def summarize(rows: Sequence, metrics: Sequence[str] = SEGMENTATION_METRICS) -> tuple[MetricSummary, ...]:
    """Per organ (first-seen order) and metric: :func:`describe` over ``rows``.

    ``rows`` are records with an ``organ`` attribute and the named metric
    attributes (one row per case and organ).
    """
    by_organ: dict[str, list] = defaultdict(list)
    for r in rows:
        by_organ[r.organ].append(r)
    out = []
    for organ, organ_rows in by_organ.items():
        for metric in metrics:
            d = describe([getattr(r, metric) for r in organ_rows])
            out.append(MetricSummary(organ, metric, **asdict(d)))
    return tuple(out)


@dataclass(frozen=True)
class PairedTest:
    """``a`` vs ``b`` on the same cases. ``mean_diff`` is ``mean(a - b)``."""

    mean_diff: float
    t: float
    p_t: float
    w: float
    p_wilcoxon: float
    n: int

    def to_record(self) -> dict:
        return asdict(self)


def paired_tests(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``a`` vs ``b``.

    Pairs where either value is NaN are dropped; ``n`` is the pairs used.
    Conventions: all differences zero -> ``t = w = 0`` and both p = 1 (no
    evidence of a difference; scipy would give NaN or, in older releases,
    raise). Fewer than 2 pairs -> statistics and p-values NaN. Zero
    differences are otherwise handled by scipy's default ``zero_method``
    ("wilcox": dropped before ranking).
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_tests needs the same number of values, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return PairedTest(nan, nan, nan, nan, nan, 0)
    diff = x - y
    mean_diff = float(diff.mean())
    if np.all(diff == 0):
        return PairedTest(0.0, 0.0, 1.0, 0.0, 1.0, n)
    if n < 2:
        return PairedTest(mean_diff, nan, nan, nan, nan, n)
    t = stats.ttest_rel(x, y)
    w = stats.wilcoxon(x, y)
    return PairedTest(mean_diff, float(t.statistic), float(t.pvalue), float(w.statistic), float(w.pvalue), n)


__all__ = [
    "PAIRED_COLUMNS",
    "SEGMENTATION_METRICS",
    "Description",
    "MetricSummary",
    "PairedTest",
    "describe",
    "paired_tests",
    "summarize",
]
