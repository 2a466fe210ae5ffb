"""The light commands (submit, confirm, status, grade) never load torch, MONAI or dagster.

Each runs as a user runs it, in a fresh interpreter with ``-X importtime``, so
a stray import anywhere on its path (a config section, a package face, a
helper) shows up here. Start-up times are measured in benchmarks/bench_startup.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.config.template import write_template
from alqa_core.io.nifti import read_ct, read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.workspace import WorkspaceLayout

HEAVY = ("torch", "monai", "dagster", "numba")


@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    layout = write_campaign(root / "campaign", CampaignSpec(n_cases=1, seed=0, spacing_mm=(8.0, 8.0, 8.0)))
    config = write_template(root / "campaign.yaml", name="t", datasets=tuple(str(p) for p in layout.dataset_roots))
    env = {**os.environ, "ALQA_CAMPAIGN": str(config), "ALQA_WORKSPACE": str(root / "ws")}
    case, truth = layout.cases[0], layout.root / layout.cases[0].ground_truth_path
    # the case's work package, as a round's queue writes it: what `confirm` confirms
    ct = read_ct(layout.root / case.image_path)
    write_work_package(WorkspaceLayout(root / "ws").work_packages(case.plan.case_id), case.plan.case_id, 0, ct, read_label(truth),
                       np.zeros((len(T), *ct.shape), np.uint8), ("liver",), T)
    return case.plan.case_id, truth, env


def _imported(argv, env) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "alqa_dagster.cli", *argv], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("command", ["submit", "confirm", "status", "grade"])
def test_light_commands_import_no_torch_monai_or_dagster(one_case, command):
    case, label, env = one_case
    argv = {
        "submit": ["submit", case, "--label", str(label), "--annotator", "dr_a"],
        "confirm": ["confirm", case, "--annotator", "dr_a"],
        "status": ["status"],
        "grade": ["grade", case, "2", "--grader", "dr_a"],
    }[command]
    modules = _imported(argv, env)
    assert "alqa_core" in modules  # the probe sees alqa's own imports
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


SENSOR_TICK = """
import sys
import dagster as dg
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import new_cases_sensor, round_sensor, submissions_sensor
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource
defs()  # the code location, as the daemon's code server loads it
campaign = CampaignResource(config_path=sys.argv[1])
workspace = WorkspaceResource(campaign=campaign)
resources = {"campaign": campaign, "workspace": workspace, "catalog": CatalogResource(workspace=workspace)}
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions("cases", [sys.argv[2]])
    for sensor in (new_cases_sensor, submissions_sensor, round_sensor):
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            sensor(ctx)
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "monai", "numba"}))
"""


def test_the_code_location_and_a_sensor_tick_import_no_torch_monai_or_numba(one_case, tmp_path):
    case, _, env = one_case
    script = tmp_path / "tick.py"
    script.write_text(SENSOR_TICK)
    out = subprocess.run([sys.executable, str(script), env["ALQA_CAMPAIGN"], case], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_simulation_asset_defaults_are_the_simulator_defaults():
    from alqa_core.simulator.trained.run import DEFAULT_STRATEGIES
    from alqa_dagster.defs.simulator import SimulationSettings

    assert tuple(SimulationSettings().strategies) == DEFAULT_STRATEGIES
