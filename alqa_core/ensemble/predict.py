"""Predict a batch of cases with every ensemble member: trained networks once per batch, external files converted.

Trained members predict in one batch per run (each checkpoint loaded once,
cases loaded one at a time as the network reaches them); external members
(TotalSegmentator, nnU-Net outputs the user dropped in) are converted through
their class maps. Everything lands on the case's original grid under the
round's folder (:mod:`alqa_core.ensemble.members`), then the round's pseudo
label of each case is computed once and kept.
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
from alqa_core.ensemble.members import MemberInfo, load_preprocessed, write_members
from alqa_core.ensemble.pseudo_labels import write_case_pseudo_label
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.cases import index_campaign
from alqa_core.ingest.dataset import ExternalPredictionRecord
from alqa_core.ingest.preprocess import PreprocessedCT
from alqa_core.io.nifti import read_grid, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.volume import SoftPrediction
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class Predictions:
    """What a batch produced: the members of each case, and the cases that could not be predicted, with why."""

    members: Mapping[str, tuple[MemberInfo, ...]]
    errors: Mapping[str, str]


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

    A case no member predicts (no checkpoint, no external file for it), or
    whose external file is refused, is reported in ``errors`` with the file
    and the reason; the other cases go on.
    """
    infos: dict[str, list[MemberInfo]] = {c: [] for c in case_ids}
    errors: dict[str, str] = {}
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
        try:
            for rec in externals.get(case_id, ()):
                ext = read_external_prediction(rec.path, rec.class_map, table, reference, rec.member)
                write_soft_prediction(layout.soft_prediction(case_id, rec.member, round_index), ext.prediction)
                infos[case_id].append(MemberInfo(rec.member, "external", _is_one_hot(ext.prediction), ext.covered_organs, str(rec.path)))
            if not infos[case_id]:
                raise AlqaInputError(layout.raw_scan(case_id), f"case {case_id} has no ensemble member: no trained model and no external prediction")
        except AlqaInputError as exc:
            errors[case_id] = str(exc)
            continue
        write_members(layout, case_id, round_index, infos[case_id])
        write_case_pseudo_label(layout, case_id, table, round_index)
    return Predictions({c: tuple(v) for c, v in infos.items() if c not in errors}, errors)


def predict_round(
    layout: WorkspaceLayout, catalog: Catalog, config: CampaignConfig, case_ids: Sequence[str], round_index: int, device: str = "auto"
) -> Predictions:
    """The round's predictions for ``case_ids``: every trained member from its latest checkpoint, every external member.

    A member never trained (no checkpoint at or before this round) is left
    out. A case no member predicts is recorded in ``case_errors`` (stage
    ``soft_predictions``) and the others go on.
    """
    checkpoints = [(m.name, p) for m in config.trained_members if (p := layout.latest_checkpoint(m.name, round_index)) is not None]
    index = index_campaign(config)
    externals = {c: index.predictions_of(c) for c in case_ids if c in index.cases}
    inference = dataclasses.replace(config.inference, device=device)
    result = predict_cases(layout, case_ids, checkpoints, externals, inference, config.organ_table, round_index)
    for case_id, reason in result.errors.items():
        record_case_error(catalog, case_id, "soft_predictions", layout.raw_scan(case_id), reason)
    for case_id in result.members:
        clear_case_error(catalog, case_id, "soft_predictions")
    return result
