"""The labelled dataset: every ingested case's reassembled label and provenance, each round and after each answer.

A case's revision is what ``revised_labels`` last wrote for it (:func:`~.revisions.revision_of`): the
submissions themselves are never read here.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from alqa_core.annotation.labelled.reassembly import ReassembledLabel, reassemble_case
from alqa_core.annotation.labelled.revisions import REVISIONS, revision_of
from alqa_core.annotation.labelled.rounds import advance_on_answers
from alqa_core.case_errors import failed_cases
from alqa_core.catalog import Catalog
from alqa_core.ensemble.pseudo_labels import latest_pseudo_round
from alqa_core.organs import OrganTable
from alqa_core.rounds import RoundRecord
from alqa_core.workspace import WorkspaceLayout


def reassemble_cases(
    layout: WorkspaceLayout, catalog: Catalog, case_ids: Sequence[str], table: OrganTable, round_index: int
) -> tuple[dict[str, ReassembledLabel], RoundRecord | None]:
    """original > revised > pseudo for each case, with the latest pseudo label at or before ``round_index``.

    Writes each label and its provenance rows (partition: the case). Cases
    refused at ingest, or never predicted yet, are skipped. Then, if answers
    completed the round's queue (or confirmed its top case), the round moves
    to ``answered`` (or ``converged``): the returned record, else None.
    """
    cases = catalog.read("cases").set_index("case_id")
    revised = catalog.read(REVISIONS)
    refused = failed_cases(catalog)
    out: dict[str, ReassembledLabel] = {}
    for case_id in case_ids:
        pseudo_round = latest_pseudo_round(layout, case_id, round_index) if case_id in cases.index and case_id not in refused else None
        if pseudo_round is None:
            continue
        organs = [o for o in str(cases.loc[case_id].annotated_organs or "").split(",") if o]
        revision = revision_of(case_id, revised, layout)
        result = reassemble_case(layout, case_id, organs, [revision] if revision is not None else [], table, pseudo_round)
        catalog.write("provenance", case_id, pd.DataFrame(result.to_records()))
        out[case_id] = result
    return out, advance_on_answers(catalog)


__all__ = ["reassemble_cases"]
