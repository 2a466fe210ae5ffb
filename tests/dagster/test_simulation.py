"""The campaign simulator through Dagster: the ``campaign_simulation`` asset, run config, report, catalog rows; and the CLI."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from alqa_core.catalog import Catalog
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.cli import main as alqa_main
from alqa_dagster.defs.simulator import SimulationSettings, campaign_simulation
from tests.dagster.conftest import campaign_yaml, make_resources

TINY = {"strategies": ["attention", "fg_random"], "rounds": 1, "budget_per_round": 20.0, "max_epochs": 1,
        "finetune_max_epochs": 1, "iterations_per_epoch": 2, "patch_size_vox": 32, "name": "smoke"}


@pytest.fixture(scope="module")
def sim_campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "campaign"
    write_campaign(root, CampaignSpec(n_cases=8, seed=2, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.3))
    return root


@pytest.mark.slow
def test_campaign_simulation_asset_finds_the_phantom_ground_truth_and_reports(tmp_path, sim_campaign, instance):
    resources = make_resources(campaign_yaml(tmp_path, sim_campaign))
    result = dg.materialize([campaign_simulation], resources=resources, instance=instance,
                            run_config=dg.RunConfig({"campaign_simulation": SimulationSettings(**TINY)}))
    assert result.success
    meta = result.asset_materializations_for_node("campaign_simulation")[0].metadata
    assert {"final_dice_attention", "final_dice_fg_random", "rounds", "dice_vs_effort"} <= set(meta)
    layout = WorkspaceLayout(tmp_path / "ws")
    report = layout.simulation("smoke") / "report"
    rounds = pd.read_csv(report / "rounds.csv")
    assert sorted(rounds.strategy.unique()) == ["attention", "fg_random"] and sorted(rounds["round"].unique()) == [0, 1]
    stored = Catalog(layout.catalog).read("simulation")
    assert set(stored.simulation) == {"smoke"} and len(stored) == len(rounds)
    assert meta["final_dice_attention"].value == pytest.approx(rounds.query("strategy == 'attention' and round == 1").dice.item())


def test_simulation_refuses_a_folder_it_does_not_own(tmp_path, sim_campaign, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    code = alqa_main(["simulate", str(sim_campaign), "--out", str(out), "--rounds", "1"])
    assert code == 2
    assert "not written by the simulator" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "a user's file"


def test_simulation_asset_needs_a_phantom_campaign(tmp_path, sim_campaign, instance):
    resources = make_resources(campaign_yaml(tmp_path, sim_campaign))
    config = {**TINY, "campaign_root": str(tmp_path / "nowhere")}
    with pytest.raises(Exception, match="ground-truth manifest"):
        dg.materialize([campaign_simulation], resources=resources, instance=instance,
                       run_config=dg.RunConfig({"campaign_simulation": SimulationSettings(**config)}))


@pytest.mark.slow
def test_cli_simulates_error_model_members(tmp_path, capsys):
    out = tmp_path / "em"
    code = alqa_main(["simulate", "--members", "error-model", "--out", str(out), "--cases", "30", "--seeds", "0-1", "--rounds", "2",
                      "--phantom-spacing-mm", "6", "--workers", "1", "--name", "em-cli"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "No training" in printed and "recall_at_depth.png" in printed
    report = out / "report"
    for name in ("report.md", "recall_at_depth.png", "dataset_dice_vs_effort.png", "attention_by_organ.png", "rounds.csv", "paired_tests.csv"):
        assert (report / name).is_file(), name
    assert "`alqa simulate --members error-model --out " in (report / "report.md").read_text()
    stored = Catalog(out / "catalog").read("simulation")
    assert set(stored.simulation) == {"em-cli"} and set(stored.seed) == {0, 1}
    assert set(stored.strategy) == {"attention", "outliers", "uss", "fg_random"}


def test_cli_refuses_unknown_members_and_a_missing_campaign(tmp_path, capsys):
    assert alqa_main(["simulate", "--members", "many", "--out", str(tmp_path / "x")]) == 2
    assert "error-model" in capsys.readouterr().err
    assert alqa_main(["simulate", "--out", str(tmp_path / "y")]) == 2
    assert "phantom campaign root" in capsys.readouterr().err


@pytest.mark.slow
def test_campaign_simulation_asset_runs_error_model_members(tmp_path, sim_campaign, instance):
    resources = make_resources(campaign_yaml(tmp_path, sim_campaign))
    settings = SimulationSettings(members="error-model", cases=24, seeds=[0], rounds=1, workers=1, name="em-asset")
    result = dg.materialize([campaign_simulation], resources=resources, instance=instance,
                            run_config=dg.RunConfig({"campaign_simulation": settings}))
    assert result.success
    meta = result.asset_materializations_for_node("campaign_simulation")[0].metadata
    assert {"recall_at_5pct", "recall_at_depth", "dataset_dice_vs_effort", "final_dataset_dice_attention"} <= set(meta)
    report = WorkspaceLayout(tmp_path / "ws").simulation("em-asset") / "report"
    assert (report / "report.md").is_file() and (report / "recall_at_depth.png").is_file()
    stored = Catalog(WorkspaceLayout(tmp_path / "ws").catalog).read("simulation")
    assert set(stored.simulation) == {"em-asset"} and set(stored.members) == {"error-model"}
