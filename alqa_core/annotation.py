"""The annotation half of a round: priority list, queue and work packages, revisions, reassembly."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alqa_core.config import BudgetConfig
from alqa_core.ensemble import case_pseudo_label
from alqa_core.io.atomic import atomic_path
from alqa_core.io.nifti import read_ct, read_label, read_soft_prediction, write_label
from alqa_core.organs import OrganTable
from alqa_core.priority import AnnotationQueue, PriorityList, rank_cases, select_queue, summaries_from_records
from alqa_core.reassembly import ReassembledLabel, Revision, reassemble
from alqa_core.submissions import apply_slice_revision, submitted_slices
from alqa_core.work_package import WorkPackage, write_work_package
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
        from alqa_core.priority import queue_budget
        from alqa_core.qa import outlier_queue, predicted_failures

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


@dataclass(frozen=True)
class RevisionFile:
    """The revision that counts for a case: the latest accepted submission."""

    case_id: str
    path: Path
    revision: Revision


def _revision(row, layout: WorkspaceLayout, table: OrganTable) -> Revision:
    when = datetime.fromisoformat(str(row.submitted_at))
    label = read_label(row.stored_path) if row.kind == "revised" else None
    return Revision(label, str(row.submission_id), str(row.annotator), when, str(row.kind))


def _package_pseudo(layout: WorkspaceLayout, row, case_id: str):
    return read_label(layout.work_package(int(row.round), case_id) / "pseudo_label.nii.gz")


def revisions_of(case_id: str, submissions: pd.DataFrame, layout: WorkspaceLayout, table: OrganTable) -> list[Revision]:
    """Every accepted submission for ``case_id`` as a :class:`Revision` (oldest first).

    A slice-level revision's label is completed on the other slices by what
    stood before it: the previous revision, or its work package's pseudo label.
    """
    if submissions.empty:
        return []
    rows = submissions[(submissions.case_id == case_id) & (submissions.status == "accepted")]
    out: list[Revision] = []
    for r in rows.sort_values("submitted_at").itertuples():
        revision, slices = _revision(r, layout, table), submitted_slices(r)
        if slices and revision.label is not None:
            before = out[-1].label if out and out[-1].label is not None else _package_pseudo(layout, r, case_id)
            revision = dataclasses.replace(revision, label=apply_slice_revision(before, revision.label, slices))
        out.append(revision)
    return out


def write_revised_label(layout: WorkspaceLayout, case_id: str, revisions: Sequence[Revision], table: OrganTable) -> Path:
    """The case's revised label: the latest accepted revision, or the pseudo label it confirmed."""
    from alqa_core.reassembly import select_revision

    chosen = select_revision(list(revisions))
    label = chosen.label if chosen.kind == "revised" else case_pseudo_label(layout, case_id, table)
    return write_label(layout.revised_label(case_id), label)


def reassemble_case(
    layout: WorkspaceLayout, case_id: str, annotated_organs: Sequence[str], revisions: Sequence[Revision], table: OrganTable
) -> ReassembledLabel:
    """original > revised > pseudo, organ by organ; writes the label, returns it with provenance."""
    pseudo = case_pseudo_label(layout, case_id, table)
    original = read_label(layout.original_label(case_id)) if annotated_organs else None
    result = reassemble(case_id, table, pseudo, original, tuple(annotated_organs), list(revisions) or None)
    write_label(layout.reassembled_label(case_id), result.label)
    return result


def copy_atomic(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def submission_efforts(layout: WorkspaceLayout, case_id: str, submissions: pd.DataFrame, table: OrganTable) -> pd.DataFrame:
    """Effort rows (``effort`` table) for the case's accepted submissions that answered a work package.

    Minutes run from the package's creation (its task.json) to the submission;
    corrections compare the package's pseudo label with the revised label.
    A submission for a case that was never queued has no package to measure against.
    """
    from alqa_core.effort import effort_records, submission_effort

    if submissions.empty:
        return pd.DataFrame()
    rows = submissions[(submissions.case_id == case_id) & (submissions.status == "accepted")]
    efforts = []
    for r in rows.itertuples():
        package = layout.work_package(int(r.round), case_id)
        if not (package / "task.json").exists():
            continue
        task = json.loads((package / "task.json").read_text())
        revised = read_label(r.stored_path) if r.kind == "revised" else None
        pseudo = read_label(package / "pseudo_label.nii.gz")
        if revised is not None and submitted_slices(r):  # only the revised slices were edited
            revised = apply_slice_revision(pseudo, revised, submitted_slices(r))
        efforts.append(
            submission_effort(str(r.submission_id), case_id, str(r.annotator), int(r.round), task["created_at"], str(r.submitted_at), str(r.kind), pseudo, revised, table)
        )
    return effort_records(efforts) if efforts else pd.DataFrame()
