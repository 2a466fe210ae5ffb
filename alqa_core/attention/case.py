"""Attention of one case in the workspace: Eq. 1-4 over its ensemble, the heatmap file, its preview."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from alqa_core.attention.compute import AttentionResult, attention_from_predictions
from alqa_core.catalog import Catalog
from alqa_core.config.sections import AttentionConfig
from alqa_core.ensemble.members import load_ensemble, members_path
from alqa_core.io.atomic import atomic_write_bytes
from alqa_core.io.nifti import read_ct, read_label, write_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.render import render_overview
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


def case_attention(
    layout: WorkspaceLayout, case_id: str, dataset: str, annotated_organs: Sequence[str], config: AttentionConfig, table: OrganTable, round_index: int
) -> AttentionResult:
    """Eq. 1-4 over the case's ensemble of round ``round_index``; the per-organ heatmap is kept under that round."""
    preds, infos = load_ensemble(layout, case_id, table, round_index)
    result = attention_from_predictions(
        preds,
        organs=table.names,
        one_hot=[i.one_hot for i in infos],
        annotated_organs=tuple(annotated_organs),
        config=config,
        case_id=case_id,
        dataset=dataset,
    )
    write_soft_prediction(layout.attention_map(case_id, round_index), result.to_soft_prediction())
    return result


def attention_preview(layout: WorkspaceLayout, case_id: str, result: AttentionResult, pseudo: LabelMap, table: OrganTable) -> bytes:
    ct = read_ct(layout.raw_scan(case_id))
    heat = np.asarray(result.heatmap).max(axis=0).astype(np.float32) / 255.0
    return render_overview(ct.array, ct.affine, table, np.asarray(pseudo.array), heat)


def attention_for_cases(
    layout: WorkspaceLayout, catalog: Catalog, case_ids: Sequence[str], config: AttentionConfig, table: OrganTable, round_index: int
) -> dict[str, AttentionResult]:
    """Attention of every case predicted this round, its size rows in the catalog and its preview file.

    Cases without this round's predictions (refused at ingest, or no member
    predicted them) are skipped: they are in ``case_errors``.
    """
    cases = catalog.read("cases").set_index("case_id")
    out = {}
    for case_id in case_ids:
        if case_id not in cases.index or not members_path(layout, case_id, round_index).exists():
            continue
        row = cases.loc[case_id]
        result = case_attention(layout, case_id, row.dataset, [o for o in str(row.annotated_organs).split(",") if o], config, table, round_index)
        records = result.size.to_records(round_index)
        for name in ("attention_case", "attention_organ", "attention_slice"):
            catalog.write(name, f"{case_id}_round_{round_index:03d}", pd.DataFrame(list(getattr(records, name))))
        pseudo = read_label(layout.pseudo_label(case_id, round_index))
        atomic_write_bytes(layout.preview("attention_maps", case_id), attention_preview(layout, case_id, result, pseudo, table))
        out[case_id] = result
    return out
