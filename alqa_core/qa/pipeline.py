"""QA on the workspace: a case's montages, the regressor's training set, scores for every case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.config.sections import MONTAGE_PX, REGRESSOR_PX, QARegressorConfig
from alqa_core.ensemble.members import load_preprocessed
from alqa_core.ensemble.pseudo_labels import read_case_pseudo_label
from alqa_core.ingest.preprocess import preprocess_label
from alqa_core.io.atomic import atomic_write_bytes
from alqa_core.organs import OrganTable
from alqa_core.qa.grades import latest_grades
from alqa_core.qa.montage import downsample, montage_png, qa_montage, read_montage_png
from alqa_core.qa.regressor import QARegressorResult, load_qa_regressor, save_qa_regressor, score_montages, train_qa_regressor
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CaseMontages:
    case_id: str
    full_path: Path
    small_path: Path
    small_png: bytes


def write_case_montages(layout: WorkspaceLayout, case_id: str, table: OrganTable, round_index: int) -> CaseMontages:
    """The preprocessed CT's axial slices with the round's pseudo label overlaid (1344 and 256 px)."""
    pre = load_preprocessed(layout, case_id)
    label = preprocess_label(read_case_pseudo_label(layout, case_id, round_index), pre.record)
    full = qa_montage(pre.array, label, table, MONTAGE_PX)
    small_png = montage_png(downsample(full, REGRESSOR_PX))
    full_path = atomic_write_bytes(layout.montage(case_id, MONTAGE_PX), montage_png(full))
    small_path = atomic_write_bytes(layout.montage(case_id, REGRESSOR_PX), small_png)
    return CaseMontages(case_id, full_path, small_path, small_png)


def train_regressor_from_grades(layout: WorkspaceLayout, catalog: Catalog, config: QARegressorConfig, out: Path) -> tuple[QARegressorResult, int]:
    """Train on the latest grade of every graded case that has a montage; returns (result, n_montages)."""
    grades = latest_grades(catalog)
    if grades.empty:
        raise ValueError("no QA grades yet: grade some montages first (alqa grade CASE 0|1|2 --grader NAME)")
    latest = grades.sort_values(["case_id", "round"]).groupby("case_id").tail(1)
    rows = [(r.case_id, float(r.grade)) for r in latest.itertuples() if layout.montage(r.case_id, REGRESSOR_PX).exists()]
    montages = [(c, read_montage_png(layout.montage(c, REGRESSOR_PX))) for c, _ in rows]
    result = train_qa_regressor(montages, [g for _, g in rows], config)
    save_qa_regressor(out, result)
    return result, len(rows)


def score_cases(layout: WorkspaceLayout, regressor_path: Path, case_ids, round_index: int) -> pd.DataFrame:
    """Predicted QA grade in [0, 2] for every case with a 256 px montage."""
    loaded = load_qa_regressor(regressor_path)
    have = [c for c in case_ids if layout.montage(c, REGRESSOR_PX).exists()]
    scores = score_montages(loaded.network, [read_montage_png(layout.montage(c, REGRESSOR_PX)) for c in have]) if have else np.zeros(0)
    return pd.DataFrame({"case_id": have, "round": round_index, "score": scores.astype(float)})
