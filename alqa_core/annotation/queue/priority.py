"""The priority list, the round's queue and the stop rule (003 §3.2, steps 4, 5 and 8).

- :func:`rank_frame`: cases ranked by attention size, largest first; ties by
  ``case_id`` (so the order never depends on input order). Within a case,
  the organs to fix come largest attention first (ties by organ name), and
  organs with no attention are left out, as in the public code's CSV. It
  ranks one round's ``attention_organ`` rows, vectorised (100,000 cases in
  well under a second, where one Python object per case and organ took
  ~40 s); :func:`rank_attention_rows` gives the same list as a
  :class:`PriorityList`, and :func:`priority_list` reads a ranked frame
  (the ``priority`` table) back as one.
- The measure is configurable (:data:`MEASURES`, sums over the case's scored
  organs, see :mod:`alqa_core.attention.size`). The default,
  ``relative_per_cm``, is each organ's attention relative to its predicted
  volume (so the liver does not drown the gallbladder), divided by the scan
  length (AbdomenAtlas's slice-count normalisation, in cm so that spacing
  does not matter). Note that it ranks a long scan below a short one with the
  same errors; ``relative`` does not normalise by length.
- :func:`select_queue`: the round's budget, the top ``fraction`` (default 5%)
  of all ranked cases or an explicit ``count``, at least ``min_cases`` when
  any case has attention > 0, taken from the top of the list after leaving
  out cases already revised this round, cases confirmed, and cases with no
  attention.
- :func:`stop_rule`: the campaign converges when the annotator confirms the
  top case of the round's queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from alqa_core.errors import AlqaInputError

MEASURES = ("relative_per_cm", "relative", "ml_per_cm", "attention_ml", "weighted_ml", "abdomenatlas")
DEFAULT_MEASURE = "relative_per_cm"


@dataclass(frozen=True)
class PriorityEntry:
    rank: int  # 1 = most urgent
    case_id: str
    dataset: str
    score: float
    organs: tuple[str, ...]  # in the order to fix them
    organ_scores: tuple[float, ...]

    def record(self) -> dict:
        return {
            "rank": self.rank,
            "case_id": self.case_id,
            "dataset": self.dataset,
            "score": self.score,
            "organs": list(self.organs),
            "organ_scores": list(self.organ_scores),
        }


@dataclass(frozen=True)
class PriorityList:
    measure: str
    entries: tuple[PriorityEntry, ...]

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(e.case_id for e in self.entries)

    def entry(self, case_id: str) -> PriorityEntry:
        for e in self.entries:
            if e.case_id == case_id:
                return e
        raise KeyError(f"case {case_id!r} is not in the priority list")

    def to_records(self, round_index: int) -> list[dict]:
        """Rows for the ``priority`` table."""
        return [{"round": int(round_index), "measure": self.measure, **e.record()} for e in self.entries]


def _check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise AlqaInputError(None, f"priority: unknown attention measure {measure!r}; known: {list(MEASURES)}")
    return measure


#: the columns of :func:`rank_frame` (the ``priority`` table's, less ``round`` and ``measure``)
RANK_COLUMNS = ("rank", "case_id", "dataset", "score", "organs", "organ_scores")


def rank_attention_rows(rows: pd.DataFrame, *, measure: str = DEFAULT_MEASURE, datasets: Mapping[str, str] | None = None) -> PriorityList:
    """:func:`rank_frame` of one round's ``attention_organ`` rows as a :class:`PriorityList`."""
    return priority_list(rank_frame(rows, measure=measure, datasets=datasets), measure)


def priority_list(frame: pd.DataFrame, measure: str = DEFAULT_MEASURE) -> PriorityList:
    """A ranked frame (:func:`rank_frame`'s, or the ``priority`` table's rows of one round) as a :class:`PriorityList`, by rank."""
    frame = frame.sort_values("rank") if len(frame) else frame
    entries = zip(frame["rank"].tolist(), frame.case_id.tolist(), frame.dataset.tolist(), frame.score.tolist(), frame.organs.tolist(), frame.organ_scores.tolist())
    return PriorityList(_check_measure(measure), tuple(PriorityEntry(int(r), str(c), str(d or ""), float(s), tuple(str(x) for x in o), tuple(float(x) for x in v)) for r, c, d, s, o, v in entries))


def rank_frame(rows: pd.DataFrame, *, measure: str = DEFAULT_MEASURE, datasets: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The priority list of one round's ``attention_organ`` rows as a frame (:data:`RANK_COLUMNS`), most urgent first.

    Without an object per case: a case's score is the sum, in row order, of
    its scored organs' ``measure`` (rows with ``scored`` false are skipped;
    ``dataset`` comes from the row, else from ``datasets[case_id]``, else
    ""); a case whose rows are all unscored is ranked
    with score 0; ties by case id; ``organs`` lists the organs to fix (value >
    0, largest first, ties by name) and ``organ_scores`` their values. Values
    must be finite and >= 0; a (case, organ) given twice is refused (one
    attention result per case and round writes each organ once).
    """
    _check_measure(measure)
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(RANK_COLUMNS, ("int64", "object", "object", "float64", "object", "object"))})
    # integer codes for cases and organs, numbered in name order (so ties break by name)
    codes, case_ids = pd.factorize(rows["case_id"].astype(str), sort=True)
    organ_codes, organ_names = pd.factorize(rows["organ"].astype(str), sort=True)
    n = len(case_ids)
    scored = rows["scored"].fillna(True).astype(bool).to_numpy() if "scored" in rows else np.ones(len(rows), bool)
    values = rows[measure].to_numpy(np.float64, na_value=np.nan) if measure in rows else np.zeros(len(rows))
    bad = scored & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        where = sorted(set(case_ids[codes[bad]]))[:5]
        raise AlqaInputError(None, f"priority: cases {where} have {measure} values that are not finite and >= 0: {values[bad][:5].tolist()}")
    twice = pd.Series(codes.astype(np.int64) * len(organ_names) + organ_codes).duplicated().to_numpy()
    if twice.any():
        k = int(np.argmax(twice))
        raise AlqaInputError(None, f"priority: case {case_ids[codes[k]]!r} has organ {organ_names[organ_codes[k]]!r} twice in the attention rows")
    # the dataset of a case: its last row's, else the cases table's, else ""
    last = np.zeros(n, np.int64)
    np.maximum.at(last, codes, np.arange(len(rows)))
    named = rows["dataset"].to_numpy(object)[last] if "dataset" in rows else np.full(n, None, object)
    fallback = datasets or {}
    ids = case_ids.tolist()
    case_dataset = [d if isinstance(d, str) and d else fallback.get(c, "") for d, c in zip(named.tolist(), ids)]
    # score: each case's scored values in a (case x position) matrix, summed column by column = in row order
    sc = np.flatnonzero(scored)
    position = pd.Series(codes[sc]).groupby(codes[sc]).cumcount().to_numpy()
    matrix = np.zeros((n, int(position.max()) + 1 if len(sc) else 1))
    matrix[codes[sc], position] = values[sc]
    score = np.zeros(n)
    for column in matrix.T:
        score = score + column
    # organs to fix: positive scored values, largest first, ties by organ name, grouped by case
    pos = sc[values[sc] > 0]
    order = pos[np.lexsort((organ_codes[pos], -values[pos], codes[pos]))]
    counts = np.bincount(codes[order], minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # largest score first; ties by case id (the codes are in case-id order)
    rank = np.lexsort((np.arange(n), -score))
    # each case's organs as one Arrow list column (offsets + values): no Python object per case
    lengths = counts[rank]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    take = order[np.arange(offsets[-1]) - np.repeat(offsets[:-1] - starts[rank], lengths)]
    organs = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(np.asarray(organ_names, object)[organ_codes[take]], pa.string()))
    organ_scores = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[take], pa.float64()))
    return pd.DataFrame({
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "case_id": np.asarray(ids, object)[rank],
        "dataset": np.asarray(case_dataset, object)[rank],
        "score": score[rank],
        "organs": pd.Series(organs, dtype=pd.ArrowDtype(organs.type)),
        "organ_scores": pd.Series(organ_scores, dtype=pd.ArrowDtype(organ_scores.type)),
    })


@dataclass(frozen=True)
class AnnotationQueue:
    """The cases of one round's budget, most urgent first."""

    measure: str
    entries: tuple[PriorityEntry, ...]
    n_ranked: int
    budget: int

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(e.case_id for e in self.entries)

    @property
    def top_case(self) -> str | None:
        return self.entries[0].case_id if self.entries else None

    def to_records(self, round_index: int) -> list[dict]:
        """Rows for the ``queue`` table; ``position`` 1 is the top case."""
        return [
            {"round": int(round_index), "position": i + 1, "measure": self.measure, **e.record()}
            for i, e in enumerate(self.entries)
        ]


def queue_budget(n_ranked: int, *, fraction: float = 0.05, count: int | None = None, min_cases: int = 1) -> int:
    """How many cases a round reviews: ``count``, else ceil(``fraction`` x ``n_ranked``), at least ``min_cases``."""
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise AlqaInputError(None, f"priority: count must be an integer >= 0, got {count!r}")
        return count
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise AlqaInputError(None, f"priority: fraction must be in [0, 1], got {fraction!r}")
    if isinstance(min_cases, bool) or not isinstance(min_cases, int) or min_cases < 0:
        raise AlqaInputError(None, f"priority: min_cases must be an integer >= 0, got {min_cases!r}")
    return max(math.ceil(fraction * n_ranked - 1e-9), min_cases)


def select_queue(
    priority: PriorityList,
    *,
    fraction: float = 0.05,
    count: int | None = None,
    min_cases: int = 1,
    revised: Collection[str] = (),
    confirmed: Collection[str] = (),
) -> AnnotationQueue:
    """The round's queue: the budget's worth of cases from the top of ``priority``.

    The budget is counted on all ranked cases; cases in ``revised`` (already
    revised this round) or ``confirmed``, and cases with no attention, are
    skipped, and the next ones fill their places.
    """
    budget = queue_budget(len(priority.entries), fraction=fraction, count=count, min_cases=min_cases)
    skip = set(revised) | set(confirmed)
    eligible = [e for e in priority.entries if e.score > 0 and e.case_id not in skip]
    return AnnotationQueue(priority.measure, tuple(eligible[:budget]), len(priority.entries), budget)


@dataclass(frozen=True)
class StopDecision:
    converged: bool
    top_case: str | None
    reason: str


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        if name not in item:
            raise AlqaInputError(None, f"stop rule: submission {dict(item)!r} has no {name!r}")
        return item[name]
    if not hasattr(item, name):
        raise AlqaInputError(None, f"stop rule: submission {item!r} has no {name!r}")
    return getattr(item, name)


def stop_rule(queue: AnnotationQueue | Sequence[str], submissions: Iterable[Any]) -> StopDecision:
    """Does the campaign converge with this round? (003 §3.2 step 8.)

    ``queue``: the round's queue (or its case ids, top first).
    ``submissions``: the round's accepted submissions, each with ``case_id``
    and ``kind`` ("revised" or "confirmed"), as attributes (e.g.
    :class:`alqa_core.annotation.intake.inbox.SubmissionMeta`) or mapping keys (catalog
    rows). Converged when the top case has a confirmation and no revision.
    An empty queue (no case with attention left) also converges.
    """
    case_ids = queue.case_ids if isinstance(queue, AnnotationQueue) else tuple(queue)
    if not case_ids:
        return StopDecision(True, None, "the queue is empty: no case has attention left to review")
    top = case_ids[0]
    kinds = {str(_field(s, "kind")) for s in submissions if str(_field(s, "case_id")) == top}
    unknown = kinds - {"revised", "confirmed"}
    if unknown:
        raise AlqaInputError(None, f"stop rule: submission kinds must be 'revised' or 'confirmed', got {sorted(unknown)}")
    if "revised" in kinds:
        return StopDecision(False, top, f"the top case {top!r} was revised: its prediction still needed fixing")
    if "confirmed" in kinds:
        return StopDecision(True, top, f"the annotator confirmed the top case {top!r} needs no revision")
    return StopDecision(False, top, f"waiting for the annotator's verdict on the top case {top!r}")
