"""The outlier queue: QA failures first, then the attention priority list.

000_3a3cb93e44d13ddd.txt: predictions graded "global failure" (outliers) are
the cases worth a radiologist's hour; adding labelled outliers to fine-tuning
beat adding inliers at equal count. :func:`outlier_queue` is the queue
strategy that does this on top of the attention ranking (003):

1. **graded failures**: cases whose latest grade is 2. A case's verdict is its
   latest grade in its most recently graded round (:func:`latest_case_grades`),
   so a round-0 failure that was re-graded a success in round 1 is no longer
   an outlier, while a round-0 failure not graded since still is. Order: most
   recent round first, then attention rank (cases absent from the priority
   list after those in it), then ``case_id``;
2. **predicted failures** (optional, from the QA regressor via
   :func:`predicted_failures`): cases with no human grade in that round or
   later, most recent round first, then higher score, then attention rank,
   then ``case_id``. A human verdict always overrides a prediction;
3. the rest of the budget from the top of the priority list, skipping cases
   with no attention (as :func:`alqa_core.annotation.queue.priority.select_queue`).

``exclude`` (e.g. cases already revised or confirmed this round) applies to
all three. A failure missing from the priority list (e.g. its attention was
not computed) still gets a :class:`PriorityEntry`, with ``rank`` 0 ("not
ranked"), ``score`` NaN (no attention size), ``dataset`` "" and no organs.
"""

from __future__ import annotations

import math
import operator
from typing import Collection

import pandas as pd

from alqa_core.annotation.queue.priority import AnnotationQueue, PriorityEntry, PriorityList
from alqa_core.errors import AlqaInputError
from alqa_core.qa.grades import FAILURE, latest_grade_rows

#: a regressor score at or above this counts as a predicted failure (grades 0/1/2: nearer 2 than 1)
DEFAULT_FAILURE_THRESHOLD = 1.5


def latest_case_grades(grades: pd.DataFrame) -> pd.DataFrame:
    """One row per case: its latest grade in the most recent round it was graded in."""
    latest = latest_grade_rows(grades)
    if latest.empty:
        return latest
    return latest.sort_values(["case_id", "round"], kind="mergesort").drop_duplicates("case_id", keep="last").reset_index(drop=True)


def _check_scores(scores: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("case_id", "round", "score") if c not in scores.columns]
    if missing:
        raise AlqaInputError(None, f"QA regressor scores need columns case_id, round, score; missing {missing}")
    return scores


def predicted_failures(scores: pd.DataFrame, threshold: float = DEFAULT_FAILURE_THRESHOLD) -> pd.DataFrame:
    """Rows of ``scores`` (``case_id``, ``round``, ``score`` in [0, 2]) with ``score >= threshold``.

    Returns ``case_id``, ``round``, ``score`` and ``grade`` (= 2), sorted by
    round descending, score descending, ``case_id``; the input is not modified.
    """
    _check_scores(scores)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
        raise AlqaInputError(None, f"predicted_failures: threshold must be a finite number, got {threshold!r}")
    out = scores.loc[scores["score"].astype(float) >= float(threshold), ["case_id", "round", "score"]].copy()
    out["grade"] = FAILURE
    out = out.sort_values(["round", "score", "case_id"], ascending=[False, False, True], kind="mergesort")
    return out.reset_index(drop=True)


def _unranked(case_id: str) -> PriorityEntry:
    return PriorityEntry(rank=0, case_id=case_id, dataset="", score=float("nan"), organs=(), organ_scores=())


def outlier_queue(
    priority: PriorityList,
    grades: pd.DataFrame,
    budget: int,
    exclude: Collection[str] = (),
    *,
    predicted: pd.DataFrame | None = None,
) -> AnnotationQueue:
    """The round's queue: failures first, then attention priority, ``budget`` cases at most (module doc).

    ``grades``: the ``qa_grades`` table, raw or resolved (:func:`latest_grades`).
    ``predicted``: optional :func:`predicted_failures` rows.
    """
    try:
        n_budget = -1 if isinstance(budget, bool) else operator.index(budget)
    except TypeError:
        n_budget = -1
    if n_budget < 0:
        raise AlqaInputError(None, f"outlier_queue: budget must be an integer >= 0, got {budget!r}")
    skip = set(exclude)
    by_id = {e.case_id: e for e in priority.entries}
    n_ranked = len(priority.entries) + 1  # after every ranked case

    def attention_rank(case_id: str) -> int:
        return by_id[case_id].rank if case_id in by_id else n_ranked

    verdicts = latest_case_grades(grades)
    human = [(str(r.case_id), int(r.round)) for r in verdicts.itertuples() if int(r.grade) == FAILURE]
    human.sort(key=lambda x: (-x[1], attention_rank(x[0]), x[0]))
    chosen: list[str] = [c for c, _ in human if c not in skip]

    if predicted is not None and not predicted.empty:
        last_graded = dict(zip(verdicts["case_id"].astype(str), verdicts["round"].astype(int)))
        machine = [
            (str(r.case_id), int(r.round), float(r.score))
            for r in _check_scores(predicted).itertuples()
            if last_graded.get(str(r.case_id), -1) < int(r.round)
        ]
        machine.sort(key=lambda x: (-x[1], -x[2], attention_rank(x[0]), x[0]))
        chosen += [c for c, _, _ in machine if c not in skip]

    chosen += [e.case_id for e in priority.entries if e.score > 0 and e.case_id not in skip]
    unique = list(dict.fromkeys(chosen))[:n_budget]
    entries = tuple(by_id.get(c) or _unranked(c) for c in unique)
    return AnnotationQueue(priority.measure, entries, len(priority.entries), int(n_budget))


__all__ = ["DEFAULT_FAILURE_THRESHOLD", "latest_case_grades", "outlier_queue", "predicted_failures"]
