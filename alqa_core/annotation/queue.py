"""The round's queue: the priority list from attention rows, the queue by the configured strategy, its work packages."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from alqa_core.annotation.priority import AnnotationQueue, PriorityList, rank_cases, select_queue, summaries_from_records
from alqa_core.annotation.work_package import WorkPackage, write_work_package
from alqa_core.config.campaign import BudgetConfig
from alqa_core.ensemble.pseudo_labels import case_pseudo_label
from alqa_core.io.nifti import read_ct, read_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout


def priority_from_attention(attention_organ: pd.DataFrame, cases: pd.DataFrame, measure: str = "relative_per_cm") -> PriorityList:
    """Rank the round's cases from the catalog's ``attention_organ`` rows."""
    datasets = dict(zip(cases.case_id, cases.dataset)) if not cases.empty else {}
    return rank_cases(summaries_from_records(attention_organ.to_dict(orient="records"), datasets), measure=measure)


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
        from alqa_core.annotation.outliers import outlier_queue, predicted_failures
        from alqa_core.annotation.priority import queue_budget

        n = queue_budget(len(priority.entries), fraction=budget.fraction, count=budget.count, min_cases=budget.min_cases)
        failures = predicted_failures(predicted) if predicted is not None and not predicted.empty else None
        return outlier_queue(priority, grades if grades is not None else pd.DataFrame(), n, exclude=tuple(reviewed) + tuple(confirmed), predicted=failures)
    return select_queue(
        priority, fraction=budget.fraction, count=budget.count, min_cases=budget.min_cases, revised=reviewed, confirmed=confirmed
    )


def write_packages(layout: WorkspaceLayout, queue: AnnotationQueue, round_index: int, table: OrganTable) -> list[WorkPackage]:
    """One work package per queued case, everything on the case's original grid."""
    out = []
    for entry in queue.entries:
        ct = read_ct(layout.raw_scan(entry.case_id))
        heat = read_soft_prediction(layout.attention_map(entry.case_id), table.names, "attention")
        out.append(
            write_work_package(
                layout.work_package(round_index, entry.case_id),
                entry.case_id,
                round_index,
                ct,
                case_pseudo_label(layout, entry.case_id, table),
                np.asarray(heat.array),
                entry.organs,
                table,
            )
        )
    return out
