"""Predict a batch of cases with every ensemble member: trained networks once per batch, external files converted.

Trained members predict in one batch per run (each checkpoint loaded once);
external members (TotalSegmentator, nnU-Net outputs the user dropped in) are
converted through their class maps. Everything lands on the case's original
grid (:mod:`alqa_core.ensemble.members`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from alqa_core.config.sections import InferenceConfig
from alqa_core.ensemble.external import read_external_prediction
from alqa_core.ensemble.inference import predict_batch_from_checkpoints
from alqa_core.ensemble.members import MemberInfo, load_preprocessed, write_members
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.dataset import ExternalPredictionRecord
from alqa_core.io.nifti import read_grid, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.volume import SoftPrediction
from alqa_core.workspace import WorkspaceLayout


def _is_one_hot(pred: SoftPrediction) -> bool:
    return bool(np.isin(np.asarray(pred.array), (0, 255)).all())


def predict_cases(
    layout: WorkspaceLayout,
    case_ids: Sequence[str],
    checkpoints: Sequence[tuple[str, Path]],
    externals: Mapping[str, Sequence[ExternalPredictionRecord]],
    config: InferenceConfig,
    table: OrganTable,
) -> dict[str, tuple[MemberInfo, ...]]:
    """Write every member's soft prediction for ``case_ids``; returns the members per case."""
    infos: dict[str, list[MemberInfo]] = {c: [] for c in case_ids}
    if checkpoints:
        cases = [(c, load_preprocessed(layout, c)) for c in case_ids]
        sources = dict(checkpoints)
        for case_id, member, pred in predict_batch_from_checkpoints(list(checkpoints), cases, config, table.names):
            write_soft_prediction(layout.soft_prediction(case_id, member), pred)
            infos[case_id].append(MemberInfo(member, "trained", False, table.names, str(sources[member])))
    for case_id in case_ids:
        reference = read_grid(layout.raw_scan(case_id))
        for rec in externals.get(case_id, ()):
            ext = read_external_prediction(rec.path, rec.class_map, table, reference, rec.member)
            write_soft_prediction(layout.soft_prediction(case_id, rec.member), ext.prediction)
            infos[case_id].append(MemberInfo(rec.member, "external", _is_one_hot(ext.prediction), ext.covered_organs, str(rec.path)))
        if not infos[case_id]:
            raise AlqaInputError(layout.raw_scan(case_id), f"case {case_id} has no ensemble member: no trained model and no external prediction")
        write_members(layout, case_id, infos[case_id])
    return {c: tuple(v) for c, v in infos.items()}
