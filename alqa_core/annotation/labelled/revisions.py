"""Revisions of a case: its accepted submissions as :class:`Revision` records, and the revised label that counts.

A revision's label is the stored file read by name into organ-table values on
the case's grid. A confirmation's label is the pseudo label of the work
package it answers (what the annotator saw), never the current ensemble's. A
slice-level revision's label is completed on the other slices by what stood
before it: the previous revision, or its work package's pseudo label.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import pandas as pd

from alqa_core.annotation.intake.inbox import submitted_package, submitted_segments, submitted_slices
from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.annotation.intake.validation import apply_slice_revision
from alqa_core.annotation.labelled.reassembly import Revision, select_revision
from alqa_core.annotation.queue.packages import package_of, package_pseudo_label
from alqa_core.annotation.queue.work_package import WorkPackage
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_grid, write_label
from alqa_core.organs import OrganTable
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


def submission_label(row, layout: WorkspaceLayout, table: OrganTable) -> LabelMap:
    """A stored revision's label in organ-table values on the case's grid (as the sensor validated it)."""
    return read_submitted_label(row.stored_path, table, submitted_segments(row), read_grid(layout.raw_scan(row.case_id)))


def submission_package(row, layout: WorkspaceLayout) -> WorkPackage | None:
    """The work package a submission answers (rows recorded before package versions: the case's newest)."""
    return package_of(layout, str(row.case_id), submitted_package(row) or None)


def _revision(row, layout: WorkspaceLayout, table: OrganTable, before: LabelMap | None) -> Revision:
    when = datetime.fromisoformat(str(row.submitted_at))
    package = submission_package(row, layout)
    if row.kind == "confirmed":
        label = package_pseudo_label(package) if package is not None else None
    else:
        label, slices = submission_label(row, layout, table), submitted_slices(row)
        if slices:
            base = before if before is not None else package_pseudo_label(package) if package is not None else None
            if base is None:
                raise AlqaInputError(row.stored_path, f"slice-level revision of {row.case_id} with no work package to complete it")
            label = apply_slice_revision(base, label, slices)
    return Revision(label, str(row.submission_id), str(row.annotator), when, str(row.kind))


def revisions_of(case_id: str, submissions: pd.DataFrame, layout: WorkspaceLayout, table: OrganTable) -> list[Revision]:
    """Every accepted submission for ``case_id`` as a :class:`Revision` (oldest first)."""
    if submissions.empty:
        return []
    rows = submissions[(submissions.case_id == case_id) & (submissions.status == "accepted")]
    out: list[Revision] = []
    for r in rows.sort_values("submitted_at").itertuples():
        before = out[-1].label if out and out[-1].kind == "revised" else None
        out.append(_revision(r, layout, table, before))
    return out


def write_revised_label(layout: WorkspaceLayout, case_id: str, revisions: Sequence[Revision], table: OrganTable) -> Path:
    """The case's revised label: the latest accepted revision, or the package pseudo label it confirmed."""
    chosen = select_revision(list(revisions))
    if chosen.label is None:
        raise AlqaInputError(layout.work_packages(case_id), f"confirmation {chosen.submission_id} of {case_id} names no work package")
    return write_label(layout.revised_label(case_id), chosen.label)


__all__ = ["revisions_of", "submission_label", "submission_package", "write_revised_label"]
