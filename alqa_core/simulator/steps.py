"""The round's steps, each through the function the platform's assets call: the simulator's one round implementation.

Both simulators (trained members in :mod:`.loop`, error-model members in
:mod:`.evidence`) run their rounds through these few call sites and nothing
else, so what they measure is the platform's own selection:

- **attention**: :func:`alqa_core.attention.compute.attention_from_predictions`
  (what ``attention_maps`` runs, through :func:`alqa_core.attention.case.case_attention`);
- **priority list**: :func:`alqa_core.annotation.queue.round_queue.priority_from_attention`
  over ``attention_organ`` rows (what ``priority_list`` runs);
- **queue**: :func:`alqa_core.annotation.queue.round_queue.queue_for_round` (what
  ``annotation_queue`` runs), attention priority or QA outliers first;
- **slice and volume strategies**: :func:`alqa_core.strategies.registry.select`;
- **answers**: a :class:`~alqa_core.annotation.labelled.reassembly.Revision` as the
  submissions sensor makes it; a slice-level answer goes through
  :func:`alqa_core.annotation.intake.validation.apply_slice_revision`, as
  ``alqa submit --slices`` does;
- **reassembly**: :func:`alqa_core.annotation.labelled.reassembly.reassemble`
  (what ``reassembled_labels`` runs, through ``reassemble_case``).

Effort: the platform's queue budgets cases (a fraction or a count); the
simulator compares strategies at equal *effort*, so :func:`volume_queue`
asks ``queue_for_round`` for as many cases as fit the round's effort units,
taking the queue's order as it is (the most urgent case is never skipped
for a cheaper one).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Collection, Mapping, Sequence

import pandas as pd

from alqa_core.annotation.intake.validation import apply_slice_revision
from alqa_core.annotation.labelled.reassembly import ReassembledLabel, Revision, reassemble
from alqa_core.annotation.queue.priority import AnnotationQueue, PriorityList
from alqa_core.annotation.queue.round_queue import priority_from_attention, queue_for_round
from alqa_core.attention.compute import AttentionResult, attention_from_predictions
from alqa_core.config.campaign import BudgetConfig
from alqa_core.config.sections import AttentionConfig
from alqa_core.organs import OrganTable
from alqa_core.strategies.effort_model import BUDGET_EPS, DEFAULT_EFFORT_MODEL, EffortModel
from alqa_core.strategies.registry import select
from alqa_core.strategies.selection import Selection
from alqa_core.strategies.uncertainty import CaseUncertainty
from alqa_core.volume import LabelMap, SoftPrediction

#: strategies that queue whole volumes from the priority list (the platform's ``budget.strategy``)
VOLUME_QUEUES = ("attention", "outliers")
#: the oracle's submissions are dated from here, one day per round (reassembly needs aware datetimes)
ORACLE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def attention(
    members: Sequence[SoftPrediction],
    annotated_organs: Collection[str],
    config: AttentionConfig,
    table: OrganTable,
    *,
    case_id: str = "",
    dataset: str = "",
    one_hot: Sequence[bool] | None = None,
) -> AttentionResult:
    """Eq. 1-4 over one case's members, on every organ of the table."""
    return attention_from_predictions(
        members, organs=table.names, one_hot=one_hot, annotated_organs=tuple(annotated_organs), config=config,
        case_id=case_id, dataset=dataset,
    )


def priority(attention_organ: pd.DataFrame, cases: pd.DataFrame, measure: str) -> PriorityList:
    """The priority list from ``attention_organ`` rows and ``cases`` (case_id, dataset) rows."""
    return priority_from_attention(attention_organ, cases, measure=measure)


def volume_queue(
    strategy: str,
    priority_list: PriorityList,
    budget: float,
    cost_of: Mapping[str, float],
    reviewed: Sequence[str] = (),
    grades: pd.DataFrame | None = None,
) -> AnnotationQueue:
    """The platform's queue for ``strategy`` ("attention" or "outliers") with as many cases as fit ``budget`` effort units."""
    def queue(count: int) -> AnnotationQueue:
        return queue_for_round(priority_list, BudgetConfig(strategy=strategy, count=count), tuple(reviewed), grades=grades)

    spent, n = 0.0, 0
    for case_id in queue(len(priority_list.entries)).case_ids:
        if spent + cost_of[case_id] > budget + BUDGET_EPS:
            break
        spent += cost_of[case_id]
        n += 1
    return queue(n)


def slice_selection(
    strategy: str,
    pool: Sequence[CaseUncertainty],
    budget: float,
    *,
    seed: int,
    exclude_cases: Collection[str] = (),
    effort_model: EffortModel = DEFAULT_EFFORT_MODEL,
) -> Selection:
    """A named strategy of :data:`alqa_core.strategies.STRATEGIES` at ``budget`` effort units."""
    return select(strategy, pool, budget, seed=seed, exclude_cases=exclude_cases, effort_model=effort_model)


def oracle_revision(case_id: str, truth: LabelMap, base: LabelMap, slices: Sequence[int] | None, round_index: int) -> Revision:
    """The oracle's answer as an accepted submission: the truth, or the truth on ``slices`` over ``base`` (the package's label)."""
    label = truth if slices is None else apply_slice_revision(base, truth, slices)
    return Revision(
        label, submission_id=f"oracle-{case_id}-round{round_index:03d}", annotator="oracle",
        submitted_at=ORACLE_EPOCH + timedelta(days=int(round_index)), kind="revised",
    )


def reassembled(
    case_id: str, table: OrganTable, pseudo: LabelMap, original: LabelMap | None, original_organs: Sequence[str], revision: Revision | None
) -> ReassembledLabel:
    """original > revised > pseudo, per organ."""
    return reassemble(case_id, table, pseudo, original, tuple(original_organs), revision)


__all__ = ["ORACLE_EPOCH", "VOLUME_QUEUES", "attention", "oracle_revision", "priority", "reassembled", "slice_selection", "volume_queue"]
