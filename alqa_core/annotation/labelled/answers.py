"""A case's answers: its accepted submissions, each with the label validation stored and the package it answers.

This is the one place a revision run reads submissions' labels: each accepted
revision's label once (the file the intake wrote as it validated the
submission: organ values on the case's grid, a slice-level revision merged
onto its package's pseudo label), and each package's pseudo label once.
Revisions (:mod:`.revisions`) and effort (:mod:`.effort`) are computed from
these answers in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from alqa_core.annotation.intake.inbox import submitted_package, submitted_segments, submitted_slices
from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.annotation.intake.validation import apply_slice_revision
from alqa_core.annotation.queue.packages import package_of
from alqa_core.annotation.queue.work_package import WorkPackage
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_grid, read_label
from alqa_core.organs import OrganTable
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True, eq=False)
class Answer:
    """One accepted submission of a case (a ``submissions`` row), read once."""

    submission_id: str
    case_id: str
    annotator: str
    kind: str  # "revised" | "confirmed"
    submitted_at: str
    round_index: int
    #: a slice-level revision's slices (third voxel axis); () = the whole volume
    slices: tuple[int, ...]
    #: the revision as validated (None for a confirmation)
    label: LabelMap | None
    #: the work package answered (None: the case was never queued) and the pseudo label it handed out
    package: WorkPackage | None
    package_label: LabelMap | None

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.submitted_at)


def _text(row, name: str) -> str:
    value = getattr(row, name, "")
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def accepted_label(row, layout: WorkspaceLayout, table: OrganTable, package_label: LabelMap | None) -> LabelMap:
    """An accepted revision's label as validation checked it (rows recorded before the intake stored it: rebuilt from the stored file)."""
    path = _text(row, "label_path")
    if path:
        return read_label(path)
    label = read_submitted_label(row.stored_path, table, submitted_segments(row), read_grid(layout.raw_scan(row.case_id)))
    slices = submitted_slices(row)
    if not slices:
        return label
    if package_label is None:
        raise AlqaInputError(row.stored_path, f"slice-level revision of {row.case_id} with no work package to complete it")
    return apply_slice_revision(package_label, label, slices)


def case_answers(case_id: str, submissions: pd.DataFrame, layout: WorkspaceLayout, table: OrganTable) -> list[Answer]:
    """The case's accepted submissions as :class:`Answer`, oldest first: one label read per submission, one per package."""
    if submissions.empty:
        return []
    rows = submissions[(submissions.case_id == case_id) & (submissions.status == "accepted")]
    pseudo: dict[Path, LabelMap] = {}
    out: list[Answer] = []
    for r in rows.sort_values("submitted_at").itertuples():
        package = package_of(layout, str(r.case_id), submitted_package(r) or None)
        shown = None
        if package is not None:
            if package.pseudo_label_path not in pseudo:
                pseudo[package.pseudo_label_path] = read_label(package.pseudo_label_path)
            shown = pseudo[package.pseudo_label_path]
        label = accepted_label(r, layout, table, shown) if r.kind == "revised" else None
        out.append(Answer(str(r.submission_id), str(r.case_id), str(r.annotator), str(r.kind), str(r.submitted_at), int(r.round),
                          submitted_slices(r), label, package, shown))
    return out


__all__ = ["Answer", "accepted_label", "case_answers"]
