"""Revisions of a case: its answers as :class:`Revision` records, the revised label that counts, and that label read back.

A confirmation's label is the pseudo label of the work package it answers
(what the annotator saw), never the current ensemble's. A slice-level
revision's label is completed on the other slices by what stood before it:
the previous revision (composed here, in memory), or its work package's
pseudo label (as validation stored it).

``revised_labels`` writes the revision that counts (rule: latest accepted
wins) as the case's revised label, and records in the catalog's
``revisions`` table which submission that file holds and which it
superseded; ``reassembled_labels`` reads that file and that row
(:func:`revision_of`), never the submissions themselves.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import pandas as pd

from alqa_core.annotation.intake.validation import apply_slice_revision
from alqa_core.annotation.labelled.answers import Answer, case_answers
from alqa_core.annotation.labelled.reassembly import Revision, select_revision
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout

#: the catalog table of each case's revision that counts (one row per case, partition: the case)
REVISIONS = "revisions"


def revisions_from(answers: Sequence[Answer]) -> list[Revision]:
    """The answers (oldest first) as revisions; a slice-level revision completed by the revision before it."""
    out: list[Revision] = []
    for a in answers:
        before = out[-1].label if out and out[-1].kind == "revised" else None
        if a.kind == "confirmed":
            label = a.package_label
        elif a.slices and before is not None:
            label = apply_slice_revision(before, a.label, a.slices)
        else:
            label = a.label
        out.append(Revision(label, a.submission_id, a.annotator, a.when, a.kind))
    return out


def revisions_of(case_id: str, submissions: pd.DataFrame, layout: WorkspaceLayout, table: OrganTable) -> list[Revision]:
    """Every accepted submission for ``case_id`` as a :class:`Revision` (oldest first)."""
    return revisions_from(case_answers(case_id, submissions, layout, table))


def write_revised_label(layout: WorkspaceLayout, catalog: Catalog, case_id: str, revisions: Sequence[Revision]) -> Path:
    """The case's revised label (the latest accepted revision, or the package pseudo label it confirmed) and its ``revisions`` row."""
    chosen = select_revision(list(revisions))
    if chosen.label is None:
        raise AlqaInputError(layout.work_packages(case_id), f"confirmation {chosen.submission_id} of {case_id} names no work package")
    path = write_label(layout.revised_label(case_id), chosen.label)
    superseded = sorted(r.submission_id for r in revisions if r is not chosen)
    row = {"case_id": case_id, "submission_id": chosen.submission_id, "annotator": chosen.annotator, "kind": chosen.kind,
           "submitted_at": chosen.submitted_at.isoformat(), "superseded": ",".join(superseded), "path": str(path)}
    catalog.write(REVISIONS, case_id, pd.DataFrame([row]))
    return path


def revision_of(case_id: str, recorded: pd.DataFrame, layout: WorkspaceLayout) -> Revision | None:
    """The case's revision as ``revised_labels`` last wrote it (``recorded``: the ``revisions`` table), or None."""
    rows = recorded[recorded.case_id == case_id] if not recorded.empty else recorded
    if rows.empty:
        return None
    r = rows.iloc[-1]
    superseded = tuple(s for s in str(r.superseded or "").split(",") if s)
    return Revision(read_label(layout.revised_label(case_id)), str(r.submission_id), str(r.annotator), datetime.fromisoformat(str(r.submitted_at)), str(r.kind),
                    superseded=superseded)


__all__ = ["REVISIONS", "revision_of", "revisions_from", "revisions_of", "write_revised_label"]
