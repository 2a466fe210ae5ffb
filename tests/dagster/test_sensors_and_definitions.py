"""The new-cases sensor, the CLI, and the code location as `dagster definitions validate` sees it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_dagster.cli import main as alqa
from alqa_dagster.defs.automation import new_cases_sensor

from .conftest import campaign_yaml, make_resources

REPO = Path(__file__).resolve().parents[2]


def test_new_case_files_add_partitions_and_one_batched_run(tmp_path, phantom_campaign, instance):
    campaign = tmp_path / "campaign"
    shutil.copytree(phantom_campaign, campaign)
    cfg_path = campaign_yaml(tmp_path, campaign)
    resources = make_resources(cfg_path)
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        first = new_cases_sensor(ctx)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    [add] = first.dynamic_partitions_requests
    assert sorted(add.partition_keys) == keys
    [run] = first.run_requests
    assert run.tags["dagster/asset_partition_range_start"] == keys[0] and run.tags["dagster/asset_partition_range_end"] == keys[-1]
    instance.add_dynamic_partitions("cases", list(add.partition_keys))
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as ctx:
        assert isinstance(new_cases_sensor(ctx), dg.SkipReason)
    # a new scan dropped into a dataset is found on the next tick
    full = next(p for p in (campaign / "datasets").iterdir() if "Full" in p.name)
    src = next((full / "imagesTr").glob("*_0000.nii.gz"))
    shutil.copyfile(src, full / "imagesTr" / "PhFull_9999_0000.nii.gz")
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as ctx:
        later = new_cases_sensor(ctx)
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["PhFull_9999"]
    assert later.run_requests[0].run_key != run.run_key


def test_new_cases_are_ingested_in_runs_of_batch_cases_per_run(tmp_path, phantom_campaign, instance):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    cfg_path.write_text(cfg_path.read_text().replace("cases_per_run: 50", "cases_per_run: 2"))
    with dg.build_sensor_context(instance=instance, resources=make_resources(cfg_path)) as ctx:
        found = new_cases_sensor(ctx)
    [add] = found.dynamic_partitions_requests
    keys = list(add.partition_keys)
    instance.add_dynamic_partitions("cases", keys)
    # runs of at most 2 cases, each a contiguous range of the partitions in the order they were added, covering all
    ranges = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in found.run_requests]
    order = instance.get_dynamic_partitions("cases")
    covered = [order[order.index(a) : order.index(b) + 1] for a, b in ranges]
    assert len(keys) == 5 and [len(c) for c in covered] == [2, 2, 1] and [k for c in covered for k in c] == keys
    assert len({r.run_key for r in found.run_requests}) == 3


def test_cli_init_submit_confirm_status(tmp_path, phantom_campaign, monkeypatch, capsys):
    assert alqa(["init", str(tmp_path / "c.yaml"), "--dataset", str(phantom_campaign / "datasets" / "x")]) == 2  # no such dataset
    assert alqa(["init", str(tmp_path / "c.yaml"), "--dataset", str(phantom_campaign / "datasets" / "Dataset001_PhantomFull")]) == 0
    assert alqa(["init", str(tmp_path / "c.yaml")]) == 2  # never overwrites
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg_path))
    label = next((phantom_campaign / "datasets").glob("*Full/labelsTr/*.nii.gz"))
    assert alqa(["submit", "PhFull_0000", "--label", str(label), "--annotator", "dr_a"]) == 0
    assert alqa(["confirm", "PhFull_0000", "--annotator", "dr_b"]) == 2  # never queued: no package to confirm
    assert "no work package" in capsys.readouterr().err
    assert alqa(["submit", "../evil", "--label", str(label), "--annotator", "dr_a"]) == 2
    assert alqa(["submit", "PhFull_0000", "--label", str(label), "--annotator", "dr_a/x"]) == 2  # one line, no traceback
    assert len(list((tmp_path / "ws" / "inbox").glob("*.json"))) == 1
    assert alqa(["status"]) == 0
    assert "no round has started yet" in capsys.readouterr().out


def test_dagster_definitions_validate(tmp_path, phantom_campaign):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "ALQA_CAMPAIGN": str(cfg_path), "DAGSTER_HOME": str(home)}
    exe = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(exe), "definitions", "validate", "-w", str(REPO / "workspace.yaml")], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr
