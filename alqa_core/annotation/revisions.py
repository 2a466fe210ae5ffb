"""Revisions of a case: its accepted submissions as :class:`Revision` records, and the revised label that counts.

A slice-level revision's label is completed on the other slices by what stood
before it: the previous revision, or its work package's pseudo label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import pandas as pd

from alqa_core.annotation.inbox import submitted_slices
from alqa_core.annotation.reassembly import Revision, select_revision
from alqa_core.annotation.validation import apply_slice_revision
from alqa_core.ensemble.pseudo_labels import case_pseudo_label
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout


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
    chosen = select_revision(list(revisions))
    label = chosen.label if chosen.kind == "revised" else case_pseudo_label(layout, case_id, table)
    return write_label(layout.revised_label(case_id), label)
