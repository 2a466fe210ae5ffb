"""The round's evaluation report: the ensemble's pseudo labels against held-out original labels.

Held-out cases (a stable share of labelled cases, never trained on) are
scored on the organs their dataset annotates, per member and for the
ensemble's pseudo label. Rounds are compared with paired tests on the same
cases and organs (000 §2.2: paired t-tests between models).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from alqa_core.ensemble.members import load_ensemble, members_path
from alqa_core.ensemble.pseudo_labels import read_case_pseudo_label
from alqa_core.evaluation.segmentation import evaluate_case, to_records
from alqa_core.evaluation.statistics import paired_tests, summarize
from alqa_core.io.nifti import read_label
from alqa_core.organs import OrganTable
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


def _member_label(pred, table: OrganTable) -> LabelMap:
    from alqa_core.ensemble.pseudo_labels import pseudo_label

    return pseudo_label([pred], table)


def evaluate_round(
    layout: WorkspaceLayout, cases: pd.DataFrame, holdout: Sequence[str], table: OrganTable, round_index: int, tolerance_mm: float
) -> pd.DataFrame:
    """One row per (case, organ, member) with Dice, NSD, HD95, MSD, RVE; member ``ensemble`` is the pseudo label."""
    by_case = cases.set_index("case_id")
    rows = []
    for case_id in holdout:
        if not members_path(layout, case_id, round_index).exists():
            continue  # refused at ingest, or no member predicted it this round (case_errors says why)
        organs = [o for o in str(by_case.loc[case_id].annotated_organs).split(",") if o]
        gt = read_label(layout.original_label(case_id))
        preds, _ = load_ensemble(layout, case_id, table, round_index)
        labels = [("ensemble", read_case_pseudo_label(layout, case_id, round_index))] + [(p.member, _member_label(p, table)) for p in preds]
        for member, label in labels:
            for r in to_records(evaluate_case(label, gt, table, organs, tolerance_mm, case_id)):
                rows.append({**r, "round": int(round_index), "member": member})
    return pd.DataFrame(rows)


def compare_rounds(metrics: pd.DataFrame, a: int, b: int, metric: str = "dice", member: str = "ensemble") -> dict | None:
    """Paired tests of round ``a`` vs round ``b`` on the (case, organ) pairs both scored."""
    sel = metrics[(metrics.member == member)]
    x = sel[sel["round"] == a].set_index(["case_id", "organ"])[metric]
    y = sel[sel["round"] == b].set_index(["case_id", "organ"])[metric]
    common = x.index.intersection(y.index)
    if len(common) == 0:
        return None
    test = paired_tests(x.loc[common].to_numpy(), y.loc[common].to_numpy())
    return {"round_a": a, "round_b": b, "metric": metric, **test.to_record()}


def summary_frame(metrics: pd.DataFrame, member: str = "ensemble") -> pd.DataFrame:
    """Per organ: mean, sd, 5th/95th percentiles of each metric (004's reporting)."""
    sel = metrics[metrics.member == member] if "member" in metrics else metrics
    if sel.empty:
        return pd.DataFrame()
    rows = list(sel.itertuples())
    return pd.DataFrame([s.to_record() for s in summarize(rows)])
