"""A case's ensemble on disk: soft predictions of every member, attention, pseudo label.

Trained members predict in one batch per run (each checkpoint loaded once);
external members (TotalSegmentator, nnU-Net outputs the user dropped in) are
converted through their class maps. Everything lands on the case's original
grid under ``soft_predictions/<case>/<member>.nii.gz`` with a
``members.json`` recording, per member, its kind, the organs it covers and
whether it is one-hot (a label map), which Eq. 3's overlap needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from alqa_core.attention import AttentionConfig, AttentionResult, attention_from_predictions
from alqa_core.dataset import ExternalPredictionRecord
from alqa_core.errors import AlqaInputError
from alqa_core.external import read_external_prediction
from alqa_core.inference import InferenceConfig, predict_batch_from_checkpoints
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import read_ct, read_grid, read_nifti_array, read_soft_prediction, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.preprocess import GridRecord, PreprocessedCT
from alqa_core.reassembly import pseudo_label
from alqa_core.render import render_overview
from alqa_core.volume import LabelMap, SoftPrediction
from alqa_core.workspace import WorkspaceLayout

MEMBERS_FILE = "members.json"


@dataclass(frozen=True)
class MemberInfo:
    name: str
    kind: str  # "trained" | "external"
    one_hot: bool
    covered_organs: tuple[str, ...]
    source: str


def load_preprocessed(layout: WorkspaceLayout, case_id: str) -> PreprocessedCT:
    array, _ = read_nifti_array(layout.preprocessed(case_id))
    record = GridRecord.from_dict(json.loads(layout.grid_record(case_id).read_text()))
    return PreprocessedCT(np.asarray(array, dtype=np.float32), record)


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
        folder = layout.soft_prediction(case_id, "x").parent
        atomic_write_text(folder / MEMBERS_FILE, json.dumps([asdict(i) for i in infos[case_id]], indent=1))
    return {c: tuple(v) for c, v in infos.items()}


def load_ensemble(layout: WorkspaceLayout, case_id: str, table: OrganTable) -> tuple[list[SoftPrediction], list[MemberInfo]]:
    """Every member's prediction of a case, restricted to the organs each member covers."""
    folder = layout.soft_prediction(case_id, "x").parent
    path = folder / MEMBERS_FILE
    if not path.exists():
        raise AlqaInputError(path, f"no soft predictions for case {case_id}; materialize soft_predictions first")
    infos = [MemberInfo(**{**d, "covered_organs": tuple(d["covered_organs"])}) for d in json.loads(path.read_text())]
    preds = []
    for info in infos:
        full = read_soft_prediction(layout.soft_prediction(case_id, info.name), table.names, info.name)
        keep = [table.names.index(o) for o in info.covered_organs]
        preds.append(SoftPrediction(np.asarray(full.array)[keep], full.affine, info.covered_organs, info.name))
    return preds, infos


def case_attention(
    layout: WorkspaceLayout, case_id: str, dataset: str, annotated_organs: Sequence[str], config: AttentionConfig, table: OrganTable
) -> AttentionResult:
    """Eq. 1-4 over the case's ensemble; the per-organ heatmap is written beside the other volumes."""
    preds, infos = load_ensemble(layout, case_id, table)
    result = attention_from_predictions(
        preds,
        organs=table.names,
        one_hot=[i.one_hot for i in infos],
        annotated_organs=tuple(annotated_organs),
        config=config,
        case_id=case_id,
        dataset=dataset,
    )
    write_soft_prediction(layout.attention_map(case_id), result.to_soft_prediction())
    return result


def case_pseudo_label(layout: WorkspaceLayout, case_id: str, table: OrganTable) -> LabelMap:
    """Argmax of the ensemble mean (each organ averaged over the members that cover it)."""
    preds, infos = load_ensemble(layout, case_id, table)
    return pseudo_label(preds, table, covered=[i.covered_organs for i in infos])


def attention_preview(layout: WorkspaceLayout, case_id: str, result: AttentionResult, pseudo: LabelMap, table: OrganTable) -> bytes:
    ct = read_ct(layout.raw_scan(case_id))
    heat = np.asarray(result.heatmap).max(axis=0).astype(np.float32) / 255.0
    return render_overview(ct.array, ct.affine, table, np.asarray(pseudo.array), heat)
