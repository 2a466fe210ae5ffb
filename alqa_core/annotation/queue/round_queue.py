"""The round's priority list from its attention rows (kept in the catalog's ``priority`` table), and its queue read from that table by the configured strategy, with its work packages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from alqa_core.annotation.queue.priority import DEFAULT_MEASURE, AnnotationQueue, PriorityList, priority_list, rank_attention_rows, rank_frame, select_queue
from alqa_core.annotation.queue.work_package import WorkPackage, write_work_package
from alqa_core.case_errors import failed_cases
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import BudgetConfig, CampaignConfig
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_ct, read_label, read_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.rounds import require_transition, transition
from alqa_core.workspace import WorkspaceLayout


def priority_from_attention(attention_organ: pd.DataFrame, cases: pd.DataFrame, measure: str = "relative_per_cm") -> PriorityList:
    """Rank the round's cases from the catalog's ``attention_organ`` rows (vectorised: 100,000 cases in under a second)."""
    datasets = dict(zip(cases.case_id, cases.dataset)) if not cases.empty else {}
    return rank_attention_rows(attention_organ, measure=measure, datasets=datasets)


def queue_for_round(
    priority: PriorityList,
    budget: BudgetConfig,
    reviewed: Sequence[str] = (),
    confirmed: Sequence[str] = (),
    grades: pd.DataFrame | None = None,
    predicted: pd.DataFrame | None = None,
) -> AnnotationQueue:
    """The round's queue by the configured strategy: attention priority, or QA outliers first."""
    if budget.strategy == "outliers":
        from alqa_core.annotation.queue.outliers import outlier_queue, predicted_failures
        from alqa_core.annotation.queue.priority import queue_budget

        n = queue_budget(len(priority.entries), fraction=budget.fraction, count=budget.count, min_cases=budget.min_cases)
        failures = predicted_failures(predicted) if predicted is not None and not predicted.empty else None
        return outlier_queue(priority, grades if grades is not None else pd.DataFrame(), n, exclude=tuple(reviewed) + tuple(confirmed), predicted=failures)
    return select_queue(
        priority, fraction=budget.fraction, count=budget.count, min_cases=budget.min_cases, revised=reviewed, confirmed=confirmed
    )


def write_packages(layout: WorkspaceLayout, queue: AnnotationQueue, round_index: int, table: OrganTable) -> list[WorkPackage]:
    """One work package version per queued case (round ``round_index``'s pseudo label and attention, on the original grid).

    A version written before with the same content is reused, never rewritten.
    """
    out = []
    for entry in queue.entries:
        ct = read_ct(layout.raw_scan(entry.case_id))
        heat = read_soft_prediction(layout.attention_map(entry.case_id, round_index), table.names, "attention")
        pseudo = read_label(layout.pseudo_label(entry.case_id, round_index))
        out.append(write_work_package(layout.work_packages(entry.case_id), entry.case_id, round_index, ct, pseudo, np.asarray(heat.array), entry.organs, table))
    return out


def _round_attention(catalog: Catalog, round_index: int) -> pd.DataFrame:
    """The round's ``attention_organ`` rows, read from the round's partitions only (``<case>_round_<t>``,
    :func:`alqa_core.attention.case.attention_for_cases`), so the read does not grow with the rounds."""
    rows = catalog.read("attention_organ", f"*_round_{int(round_index):03d}")
    return rows[rows["round"] == round_index].reset_index(drop=True) if not rows.empty else pd.DataFrame()


def priority_for_round(catalog: Catalog, round_index: int, measure: str = "relative_per_cm") -> pd.DataFrame:
    """Rank the round's cases by attention size, keep the list in the catalog (returned), and mark the round predicted."""
    require_transition(catalog, round_index, "predicted")
    attention = _round_attention(catalog, round_index)
    cases = catalog.read("cases")
    frame = rank_frame(attention, measure=measure, datasets=dict(zip(cases.case_id, cases.dataset)) if not cases.empty else {})
    frame.insert(0, "measure", measure)
    frame.insert(0, "round", int(round_index))
    catalog.write("priority", f"round_{round_index:03d}", frame)
    predicted = 0 if attention.empty else attention.case_id.nunique()
    refused = failed_cases(catalog, None)
    transition(catalog, round_index, "predicted", f"{predicted} cases predicted, {len(refused)} with an open error", cases_predicted=int(predicted), cases_with_errors=len(refused))
    return frame


def read_priority(catalog: Catalog, round_index: int) -> PriorityList:
    """Round ``round_index``'s priority list as :func:`priority_for_round` kept it (the ``priority`` table)."""
    partition = f"round_{int(round_index):03d}"
    if not catalog.path_of("priority", partition).exists():
        raise AlqaInputError(catalog.path_of("priority", partition), f"round {round_index} has no priority list yet: materialize priority_list first")
    frame = catalog.read("priority", partition)
    measure = str(frame.measure.iloc[0]) if len(frame) else DEFAULT_MEASURE
    return priority_list(frame, measure)


@dataclass(frozen=True)
class RoundQueue:
    queue: AnnotationQueue
    packages: tuple[WorkPackage, ...]
    frame: pd.DataFrame


def queue_round(layout: WorkspaceLayout, catalog: Catalog, config: CampaignConfig, round_index: int) -> RoundQueue:
    """The round's queue by the configured strategy from its priority list (:func:`read_priority`), a work package
    version per queued case, and the round's state.

    An empty queue (no case has attention left, or every one was reviewed)
    converges the campaign; otherwise the round is ``queued``.
    """
    from alqa_core.qa.grades import latest_grades

    require_transition(catalog, round_index, "queued")  # before any work package is written
    priority = read_priority(catalog, round_index)
    subs = catalog.read("submissions")
    answered = () if subs.empty else tuple(subs[(subs.status == "accepted") & (subs["round"] == round_index)].case_id)
    queue = queue_for_round(priority, config.budget, answered, grades=latest_grades(catalog), predicted=catalog.read("qa_scores"))
    packages = tuple(write_packages(layout, queue, round_index, config.organ_table))
    frame = pd.DataFrame(queue.to_records(round_index), columns=["round", "position", "case_id", "dataset", "score", "organs"])
    frame["package_id"] = [p.package_id for p in packages]
    frame["work_package"] = [str(p.folder) for p in packages]
    frame["created_at"] = [p.created_at for p in packages]
    catalog.write("queue", f"round_{round_index:03d}", frame)
    if frame.empty:
        transition(catalog, round_index, "converged", "the queue is empty: no case has attention left to review", queued=0)
    else:
        transition(catalog, round_index, "queued", f"{len(frame)} cases queued (budget {queue.budget})", queued=len(frame))
    return RoundQueue(queue, packages, frame)
