"""Campaign simulator: oracle, hard-case share, report writer, and a 2-round end-to-end run on tiny phantoms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alqa_core.catalog import Catalog
from alqa_core.config.sections import InferenceConfig, TrainConfig
from alqa_core.organs import DEFAULT_ORGAN_TABLE as TABLE
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.simulator.oracle import answer_slices, answer_volume, grade_from_dice, hard_case_share, oracle_grade, read_manifest
from alqa_core.simulator.trained.loop import ROUND_COLUMNS, SimulationConfig, SimulationResult, simulate
from alqa_core.simulator.trained.report import compare_strategies, write_report
from alqa_core.training.cases import TrainingCase
from alqa_core.volume import LabelMap


def _truth() -> TrainingCase:
    rng = np.random.default_rng(0)
    label = np.zeros((8, 9, 10), dtype=np.uint8)
    label[2:6, 2:7, 1:9] = 5  # liver
    label[1:3, 1:3, 3:5] = 1  # spleen
    return TrainingCase("c1", rng.random(label.shape, dtype=np.float32), label, ("liver",))


def test_grade_from_dice_thresholds():
    assert [grade_from_dice(d) for d in (0.0, 0.49, 0.5, 0.79, 0.8, 1.0)] == [2, 2, 1, 1, 0, 0]
    assert grade_from_dice(float("nan")) == 2


def test_oracle_grade_from_ground_truth_dice():
    truth = _truth()
    gt = LabelMap(truth.label.copy(), np.eye(4))
    assert oracle_grade(gt, gt, TABLE) == 0
    empty = LabelMap(np.zeros_like(truth.label), np.eye(4))
    assert oracle_grade(empty, gt, TABLE) == 2
    # liver perfect, spleen missing: mean Dice over present organs = 0.5 -> usable
    no_spleen = truth.label.copy()
    no_spleen[no_spleen == 1] = 0
    assert oracle_grade(LabelMap(no_spleen, np.eye(4)), gt, TABLE) == 1


def test_oracle_answers_whole_volume_with_every_organ():
    truth = _truth()
    answer = answer_volume(truth, TABLE)
    assert answer.annotated_organs == TABLE.names and answer.annotated_voxels is None
    np.testing.assert_array_equal(answer.label, truth.label)
    assert truth.annotated_organs == ("liver",)  # input untouched


def test_oracle_slice_answers_touch_only_selected_slices():
    truth = _truth()
    answer = answer_slices(truth, [3, 7], TABLE, case_id="c1-oracle")
    assert answer.case_id == "c1-oracle" and answer.annotated_organs == TABLE.names
    mask = answer.annotated_voxels
    assert mask[..., [3, 7]].all()
    assert not np.delete(mask, [3, 7], axis=-1).any()
    assert truth.annotated_voxels is None
    with pytest.raises(ValueError):
        answer_slices(truth, [10], TABLE)


def test_hard_case_share():
    manifest = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "hard_kind": ["", "fatty_liver", "", "situs"]})
    assert hard_case_share(["a", "b"], manifest) == 0.5
    assert hard_case_share(["b", "d", "b"], manifest) == 1.0
    assert hard_case_share(["a", "c"], manifest) == 0.0
    assert np.isnan(hard_case_share([], manifest))
    with pytest.raises(KeyError):
        hard_case_share(["zz"], manifest)


def test_read_manifest_keeps_empty_hard_kind(tmp_path):
    layout = write_campaign(tmp_path / "c", CampaignSpec(n_cases=4, seed=1, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.5))
    frame = read_manifest(layout.root)
    expected = {r.plan.case_id: (r.plan.hard_kind or "") for r in layout.cases}
    assert dict(zip(frame.case_id, frame.hard_kind)) == expected
    assert sum(1 for v in expected.values() if v) == 2


def _hand_result() -> SimulationResult:
    rounds = []
    for strategy, gain in (("attention", 0.2), ("rvs", 0.1)):
        for r in range(3):
            rounds.append({
                "strategy": strategy, "round": r, "dice": 0.5 + gain * r, "nsd": 0.4, "hd95_mm": 10.0, "effort": 0.0 if r == 0 else 20.0,
                "cumulative_effort": 20.0 * r, "budget": 20.0, "n_selected_cases": 0 if r == 0 else 1, "n_selected_slices": 0,
                "hard_share": float("nan") if r == 0 else 1.0, "attention_sensitivity": 0.7 if strategy == "attention" else float("nan"),
                "attention_precision": 0.9 if strategy == "attention" else float("nan"), "seconds": 1.0,
            })
    metrics = []
    for strategy, offset in (("attention", 0.0), ("rvs", -0.1)):
        for r in range(3):
            for i, case in enumerate(("t1", "t2", "t3")):
                for j, organ in enumerate(("liver", "spleen")):
                    metrics.append({"strategy": strategy, "round": r, "case_id": case, "organ": organ,
                                    "dice": 0.8 + 0.01 * i + 0.02 * j + offset + 0.003 * i * j * (strategy == "rvs"),
                                    "nsd": 0.5, "hd95_mm": 5.0})
    return SimulationResult(SimulationConfig(strategies=("attention", "rvs")), pd.DataFrame(rounds, columns=list(ROUND_COLUMNS)),
                            pd.DataFrame(metrics), pd.DataFrame(), ("t1", "t2", "t3"), ("v1",), 1.0)


def test_compare_strategies_pairs_final_round_by_case_and_organ():
    table = compare_strategies(_hand_result())
    assert list(table.strategy) == ["rvs"] and list(table.baseline) == ["attention"]
    row = table.iloc[0]
    assert row["round"] == 2 and row["n"] == 6
    expected = np.mean([-0.1 + 0.003 * i * j for i in range(3) for j in range(2)])
    assert row["mean_diff"] == pytest.approx(expected)
    assert row["p_t"] < 0.05


def test_write_report_on_hand_built_result(tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    paths = write_report(_hand_result(), tmp_path / "out", catalog=catalog, partition="sim-test")
    text = paths.report_md.read_text()
    assert "| 2 | attention | 0.900 |" in text and "| 2 | rvs | 0.700 |" in text
    assert "Paired tests" in text and "| rvs | attention | 2 | 6 |" in text
    rounds = pd.read_csv(paths.rounds_csv)
    assert len(rounds) == 6 and set(rounds.strategy) == {"attention", "rvs"}
    assert paths.dice_plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = catalog.read("simulation")
    assert len(stored) == 6 and sorted(stored["round"].unique()) == [0, 1, 2]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_two_round_simulation_on_tiny_phantoms(tmp_path, one_thread):
    layout = write_campaign(tmp_path / "campaign", CampaignSpec(n_cases=10, seed=3, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.3))
    budget = 35.0
    config = SimulationConfig(
        strategies=("attention", "rvs"),
        rounds=2,
        budget_per_round=budget,
        train=TrainConfig(patch_size_vox=(32, 32, 32), max_epochs=2, iterations_per_epoch=3, num_threads=1, lr=1e-3, device="cpu"),
        inference=InferenceConfig(roi_size_vox=(64, 64, 64), sw_batch_size=1, device="cpu"),
        seed=5,
    )
    events = []
    result = simulate(layout.root, tmp_path / "work", config, progress=events.append)
    assert events and events[-1].stage == "done"
    rounds = result.rounds
    assert {(s, r) for s, r in zip(rounds.strategy, rounds["round"])} == {(s, r) for s in ("attention", "rvs") for r in (0, 1, 2)}
    later = rounds[rounds["round"] > 0]
    assert (later.effort <= budget + 1e-9).all() and (later.effort > 0).all()
    assert (later.n_selected_cases >= 1).all()
    assert rounds[rounds.strategy == "attention"].query("round > 0").attention_sensitivity.notna().all()
    assert rounds[rounds.strategy == "rvs"].attention_sensitivity.isna().all()
    assert rounds.dice.between(0, 1).all()
    # strategies are scored on the same test cases, none of which was ever selected
    m = result.test_metrics
    for strategy in ("attention", "rvs"):
        assert set(m[m.strategy == strategy].case_id) == set(result.test_case_ids)
    assert not set(result.selections.case_id) & set(result.test_case_ids)
    assert not set(result.selections.case_id) & set(result.val_case_ids)
    # a whole volume counts (and costs) the slices that hold the scan, never the network's padding
    from alqa_core.io.nifti import read_nifti_array
    from alqa_core.workspace import WorkspaceLayout

    work = WorkspaceLayout(tmp_path / "work" / "workspace")
    for row in result.selections[result.selections.whole_volume].itertuples():
        image, _ = read_nifti_array(work.preprocessed(row.case_id))
        filled = np.flatnonzero(np.asarray(image).any(axis=(0, 1)))
        assert row.n_slices == filled.max() - filled.min() + 1 < image.shape[2]
    paths = write_report(result, tmp_path / "report")
    assert "Paired tests" in paths.report_md.read_text()
    assert len(pd.read_csv(paths.rounds_csv)) == 6
    assert paths.dice_plot_png.stat().st_size > 1000
    paired = compare_strategies(result)
    assert list(paired.strategy) == ["rvs"] and paired.iloc[0]["n"] > 0


def test_scan_slices_skip_the_padding_a_network_needs():
    from alqa_core.simulator.trained.loop import scan_slices

    image = np.zeros((4, 4, 16), np.float32)
    image[1:3, 1:3, 3:11] = 0.4
    image[:, :, 6] = 0.0  # an empty slice inside the scan still belongs to it
    assert scan_slices(image) == range(3, 11)
    assert scan_slices(np.zeros((2, 2, 3), np.float32)) == range(0)
