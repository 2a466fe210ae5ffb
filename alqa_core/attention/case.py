"""Attention of one case in the workspace: Eq. 1-4 over its ensemble, the heatmap file, its preview."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from alqa_core.attention.compute import AttentionResult, attention_from_predictions
from alqa_core.config.sections import AttentionConfig
from alqa_core.ensemble.members import load_ensemble
from alqa_core.io.nifti import read_ct, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.render import render_overview
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


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


def attention_preview(layout: WorkspaceLayout, case_id: str, result: AttentionResult, pseudo: LabelMap, table: OrganTable) -> bytes:
    ct = read_ct(layout.raw_scan(case_id))
    heat = np.asarray(result.heatmap).max(axis=0).astype(np.float32) / 255.0
    return render_overview(ct.array, ct.affine, table, np.asarray(pseudo.array), heat)
