"""The answered cases' revised labels and the effort of each answer, after each accepted submission.

Each case's answers are read once (:func:`~.answers.case_answers`: one label
read per accepted submission); its revisions, the revised label that counts
and every answer's effort are computed from them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from alqa_core.annotation.labelled.answers import case_answers
from alqa_core.annotation.labelled.effort import submission_efforts
from alqa_core.annotation.labelled.reassembly import select_revision
from alqa_core.annotation.labelled.revisions import revisions_from, write_revised_label
from alqa_core.catalog import Catalog
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True, eq=False)
class RevisedCase:
    """What a case's revision run wrote (no label maps: a chunk's cases are kept, their labels are not)."""

    path: Path
    #: accepted answers of the case
    submissions: int
    #: the revision that counts (rule: latest accepted wins)
    chosen: str
    annotator: str
    #: the ``effort`` rows of the answers that answered a work package
    effort: pd.DataFrame


def revise_cases(layout: WorkspaceLayout, catalog: Catalog, case_ids: Sequence[str], table: OrganTable) -> dict[str, RevisedCase]:
    """Write each answered case's revised label and ``revisions`` row, and each answer's ``effort`` rows (partition: the submission).

    Cases nobody answered are left out of the result.
    """
    subs = catalog.read("submissions")
    out: dict[str, RevisedCase] = {}
    for case_id in case_ids:
        answers = case_answers(case_id, subs, layout, table)
        if not answers:
            continue
        revisions = revisions_from(answers)
        path = write_revised_label(layout, catalog, case_id, revisions)
        effort = submission_efforts(answers, table)
        for submission_id, rows in effort.groupby("submission_id") if not effort.empty else ():
            catalog.write("effort", str(submission_id), rows)
        chosen = select_revision(revisions)
        out[case_id] = RevisedCase(path, len(revisions), chosen.submission_id, chosen.annotator, effort)
    return out


__all__ = ["RevisedCase", "revise_cases"]
