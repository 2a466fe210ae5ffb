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
