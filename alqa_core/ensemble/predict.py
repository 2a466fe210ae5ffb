"""Predict a batch of cases with every ensemble member: trained networks once per batch, external files converted.

Trained members predict in one batch per run (each checkpoint loaded once,
cases loaded one at a time as the network reaches them); external members
(TotalSegmentator, nnU-Net outputs the user dropped in) are converted through
their class maps. Everything lands on the case's original grid under the
round's folder (:mod:`alqa_core.ensemble.members`), then the round's pseudo
label of each case is computed once and kept.

A member whose file cannot be used for one case (unreadable, another grid, no
organ covered) costs that member, not the case: the case goes on with the
others while at least :data:`MIN_MEMBERS` remain (Eq. 1's spread needs two),
and is refused with every failed member's reason when fewer do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from alqa_core.case_errors import clear_case_error, record_case_error
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.config.sections import InferenceConfig
from alqa_core.ensemble.external import read_external_prediction
from alqa_core.ensemble.members import MemberInfo, load_preprocessed, members_path, write_members
from alqa_core.ensemble.pseudo_labels import write_case_pseudo_label
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.cases import index_campaign
from alqa_core.ingest.dataset import ExternalPredictionRecord
from alqa_core.ingest.preprocess import PreprocessedCT
from alqa_core.io.nifti import read_grid, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.volume import SoftPrediction
from alqa_core.workspace import WorkspaceLayout

#: members a case must keep when one of its members failed (attention's spread, Eq. 1, needs two)
MIN_MEMBERS = 2
#: the stage a case's prediction errors (and its members' failures) are recorded at
STAGE = "soft_predictions"


@dataclass(frozen=True)
class MemberFailure:
    """One member's file that could not be used for one case, and why."""

    member: str
    file: str
    reason: str

    def render(self) -> str:
        return f"{self.member}: {self.file}: {self.reason}"


@dataclass(frozen=True)
class Predictions:
    """What a batch produced: the members of each case, the cases that could not be predicted (with why), and the
    members that failed for a case (the case went on without them when it is in ``members``, else it is refused)."""

    members: Mapping[str, tuple[MemberInfo, ...]]
    errors: Mapping[str, str]
    failed_members: Mapping[str, tuple[MemberFailure, ...]] = dataclasses.field(default_factory=dict)


class _Cases:
    """The batch's preprocessed cases, read from disk as each network reaches them (one case in memory)."""

    def __init__(self, layout: WorkspaceLayout, case_ids: Sequence[str]):
        self.layout, self.case_ids = layout, tuple(case_ids)

    def __iter__(self) -> Iterator[tuple[str, PreprocessedCT]]:
        for case_id in self.case_ids:
            yield case_id, load_preprocessed(self.layout, case_id)


def _is_one_hot(pred: SoftPrediction) -> bool:
    return bool(np.isin(np.asarray(pred.array), (0, 255)).all())


def predict_cases(
    layout: WorkspaceLayout,
    case_ids: Sequence[str],
    checkpoints: Sequence[tuple[str, Path]],
    externals: Mapping[str, Sequence[ExternalPredictionRecord]],
    config: InferenceConfig,
    table: OrganTable,
    round_index: int,
) -> Predictions:
    """Write every member's soft prediction and the pseudo label of ``case_ids`` for round ``round_index``.

    An external member whose file is refused for a case is left out of that
    case (``failed_members``, with the file and the reason). A case no member
    predicts (no checkpoint, no external file for it), or left with fewer than
    :data:`MIN_MEMBERS` after a failure, is reported in ``errors`` with every
    failed member's file and reason; the other cases go on.
    """
    infos: dict[str, list[MemberInfo]] = {c: [] for c in case_ids}
    errors: dict[str, str] = {}
    failed: dict[str, tuple[MemberFailure, ...]] = {}
    if checkpoints:
        from alqa_core.ensemble.inference import predict_batch_from_checkpoints  # torch: only when a network runs

        sources = dict(checkpoints)
        mc = config.mc_samples > 0
        for case_id, member, pred in predict_batch_from_checkpoints(list(checkpoints), _Cases(layout, case_ids), config, table.names):
            write_soft_prediction(layout.soft_prediction(case_id, member, round_index), pred)
            source = sources[member.rsplit("-mc", 1)[0]] if mc else sources[member]
            infos[case_id].append(MemberInfo(member, "mc_sample" if mc else "trained", False, table.names, str(source)))
    for case_id in case_ids:
        reference = read_grid(layout.raw_scan(case_id))
        lost = []
        for rec in externals.get(case_id, ()):
            try:
                ext = read_external_prediction(rec.path, rec.class_map, table, reference, rec.member)
            except AlqaInputError as exc:
                lost.append(MemberFailure(rec.member, exc.path or str(rec.path), exc.reason))
                continue
            write_soft_prediction(layout.soft_prediction(case_id, rec.member, round_index), ext.prediction)
            infos[case_id].append(MemberInfo(rec.member, "external", _is_one_hot(ext.prediction), ext.covered_organs, str(rec.path)))
        if lost:
            failed[case_id] = tuple(lost)
        refusal = _refusal(layout, case_id, infos[case_id], lost)
        if refusal is not None:
            errors[case_id] = refusal
            members_path(layout, case_id, round_index).unlink(missing_ok=True)  # an earlier attempt's ensemble is not this one's
            continue
        write_members(layout, case_id, round_index, infos[case_id])
        write_case_pseudo_label(layout, case_id, table, round_index)
    return Predictions({c: tuple(v) for c, v in infos.items() if c not in errors}, errors, failed)


def _refusal(layout: WorkspaceLayout, case_id: str, kept: Sequence[MemberInfo], lost: Sequence[MemberFailure]) -> str | None:
    """Why the case cannot be predicted (every failed member's file and reason), or None: it goes on with ``kept``."""
    if not kept and not lost:
        return str(AlqaInputError(layout.raw_scan(case_id), f"case {case_id} has no ensemble member: no trained model and no external prediction"))
    if lost and len(kept) < MIN_MEMBERS:
        left = ", ".join(i.name for i in kept) or "none"
        return (f"case {case_id}: {len(lost)} of {len(kept) + len(lost)} members failed, {len(kept)} left ({left}); "
                f"a case needs {MIN_MEMBERS} to go on without a member: " + "; ".join(f.render() for f in lost))
    return None


def predict_round(
    layout: WorkspaceLayout, catalog: Catalog, config: CampaignConfig, case_ids: Sequence[str], round_index: int, device: str = "auto"
) -> Predictions:
    """The round's predictions for ``case_ids``: every trained member from its latest checkpoint, every external member.

    A member never trained (no checkpoint at or before this round) is left
    out. A case no member predicts, or refused after its members failed, is
    recorded in ``case_errors`` (stage ``soft_predictions``) and the others go
    on; a member that failed for a case that went on is recorded there too,
    with its name (``member``) and the members the case went on with. A later
    success closes them.
    """
    checkpoints = [(m.name, p) for m in config.trained_members if (p := layout.latest_checkpoint(m.name, round_index)) is not None]
    index = index_campaign(config)
    externals = {c: index.predictions_of(c) for c in case_ids if c in index.cases}
    inference = dataclasses.replace(config.inference, device=device)
    result = predict_cases(layout, case_ids, checkpoints, externals, inference, config.organ_table, round_index)
    externals_named = [m.name for m in config.external_members]
    for case_id, reason in result.errors.items():
        lost = result.failed_members.get(case_id, ())
        record_case_error(catalog, case_id, STAGE, lost[0].file if len(lost) == 1 else layout.raw_scan(case_id), reason)
        for name in externals_named:  # the refusal gives every member's reason
            clear_case_error(catalog, case_id, STAGE, name)
    for case_id, infos in result.members.items():
        clear_case_error(catalog, case_id, STAGE)
        lost = {f.member: f for f in result.failed_members.get(case_id, ())}
        for name in externals_named:
            if name in lost:
                record_case_error(catalog, case_id, STAGE, lost[name].file, lost[name].reason, member=name, went_on_with=[i.name for i in infos])
            else:
                clear_case_error(catalog, case_id, STAGE, name)
    return result
