"""Opening a round: its index from the round state machine, its training set over the ingested cases, the state row.

Round 0 opens first. Round t+1 opens once round t is answered, closed or
converged; opening while round t's run has not finished (a failed run
relaunched) opens round t again, as a new attempt; a queued round is never
opened again (:mod:`alqa_core.rounds` refuses: it is answered or closed first).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alqa_core.annotation.labelled.rounds import reviewed_cases, revised_slices
from alqa_core.case_errors import failed_cases
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.rounds import RoundRecord, next_round, require_transition, transition
from alqa_core.training.training_set import TrainingSource, fingerprint, manifest, select_sources
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class OpenedRound:
    record: RoundRecord
    sources: tuple[TrainingSource, ...]
    manifest: pd.DataFrame

    @property
    def round_index(self) -> int:
        return self.record.round_index


def open_round(catalog: Catalog, layout: WorkspaceLayout, config: CampaignConfig) -> OpenedRound:
    """Fix the round's training set (original labels plus reviewed cases' reassembled labels) and mark it opened."""
    round_index = next_round(catalog)
    # refuse before the training set is written (a queued round is answered or closed first)
    require_transition(catalog, round_index, "opened")
    cases = catalog.read("cases")
    refused = failed_cases(catalog)
    if not cases.empty and refused:
        cases = cases[~cases.case_id.isin(refused)]
    sources = select_sources(cases, layout, reviewed_cases(catalog), config.organ_table, config.evaluation.holdout_fraction, revised_slices(catalog))
    frame = manifest(sources, round_index)
    catalog.write("training_set", f"round_{round_index:03d}", frame)
    reason = f"{len(sources)} training items" if sources else "the training set is empty: no labelled and no reviewed case"
    record = transition(
        catalog, round_index, "opened", reason,
        training_cases=len(sources), training_set_sha256=fingerprint(sources) if sources else "", cases_refused=len(refused),
    )
    return OpenedRound(record, tuple(sources), frame)


__all__ = ["OpenedRound", "open_round"]
