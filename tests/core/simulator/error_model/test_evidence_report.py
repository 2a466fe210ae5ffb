"""The error-model campaign end to end: seeds, rounds, recall, Table 1, the labelled dataset, the report and the catalog rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alqa_core.catalog import Catalog
from alqa_core.simulator.error_model.evidence import recall_curve
from alqa_core.simulator.error_model.run import evidence_config, run_evidence_simulation
from alqa_core.simulator.output import OWNER_MARKER


def test_recall_curve_counts_flagged_cases_within_the_depth():
    order = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    flags = {"x": np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], bool), "none": np.zeros(10, bool)}
    curve = recall_curve(order, flags, (0.0, 0.1, 0.25, 0.3, 1.0)).set_index("depth")
    assert list(curve["recall_x"]) == pytest.approx([0.0, 1 / 3, 2 / 3, 2 / 3, 1.0])  # ceil(0.25 x 10) = 3 cases
    assert curve["recall_none"].isna().all()


@pytest.mark.slow
def test_error_model_simulation_writes_the_report(tmp_path):
    config = evidence_config(n_cases=40, seeds=(0, 1), rounds=2, spacing_mm=6.0, workers=1, failure_share=0.1)
    messages = []
    run = run_evidence_simulation(tmp_path / "out", config, catalog=Catalog(tmp_path / "catalog"), name="em-test", progress=messages.append,
                                  command="alqa simulate --members error-model --cases 40")
    assert messages and (tmp_path / "out" / OWNER_MARKER).is_file()
    report = run.report.report_md.read_text()
    for needle in ("No training", "tuned on seeds 100-104 only", "## (a)", "## (b)", "## (c)", "Paired tests", "recall_at_depth.png",
                   "dataset_dice_vs_effort.png", "alqa simulate --members error-model --cases 40"):
        assert needle in report, needle
    for png in (run.report.recall_png, run.report.attention_png, run.report.dataset_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rounds = pd.read_csv(run.report.rounds_csv)
    assert set(rounds.strategy) == {"attention", "outliers", "uss", "fg_random"} and set(rounds["round"]) == {0, 1, 2}
    assert set(rounds.seed) == {0, 1} and rounds.dataset_dice.between(0, 1).all()
    # rounds only add revisions: the labelled dataset never gets worse, and round 0 is the same for every strategy
    for (_, _), g in rounds.groupby(["seed", "strategy"]):
        assert np.all(np.diff(g.sort_values("round").dataset_dice) >= -1e-12)
    assert rounds[rounds["round"] == 0].groupby("seed").dataset_dice.nunique().eq(1).all()
    stored = Catalog(tmp_path / "catalog").read("simulation")
    assert len(stored) == len(rounds) and set(stored.simulation) == {"em-test"} and set(stored.members) == {"error-model"}
    scores = pd.read_csv(run.report.report_md.parent / "attention_scores.csv")
    assert {"sensitivity", "sensitivity_detectable", "precision"} <= set(scores.columns) and len(scores) > 0
    recall = pd.read_csv(run.report.report_md.parent / "recall.csv")
    assert (recall.groupby("seed").recall_detectable.apply(lambda s: s.dropna().is_monotonic_increasing)).all()
