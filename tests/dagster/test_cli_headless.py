"""The headless CLI: alqa ingest, round, submit (a .seg.nrrd, --wait), reassemble and export, all through the instance."""

from __future__ import annotations

import argparse
import threading
import time

import dagster as dg
import pytest

from alqa_core.annotation.queue.packages import newest_package
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.catalog import Catalog
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.cli import build_parser, main
from alqa_dagster.defs.automation import submissions_sensor

from .conftest import make_resources
from .test_campaign import external_campaign


def test_every_argument_has_help_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse's own API
    missing = [
        f"{name} {a.dest}"
        for name, sub in subparsers.choices.items()
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert missing == []
    assert all(c.help for c in subparsers._choices_actions)


@pytest.mark.slow
def test_ingest_round_submit_wait_reassemble_export(tmp_path, phantom_campaign, monkeypatch, capsys):
    cfg = external_campaign(tmp_path, phantom_campaign)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert main(["ingest", "--chunk", "2"]) == 0
    assert "cases found: 5; ingested: 5; refused: 0" in capsys.readouterr().out
    assert main(["round", "--chunk", "2"]) == 0
    layout, cat = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    state = round_state(cat)
    assert state.state == "queued" and "round 0: queued" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:  # the runs are in the instance, as the UI will show them
        runs = instance.get_runs()
        assert len(runs) >= 2 + 3 + 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert {r.tags.get("alqa/round") for r in runs} >= {"0"}

    # the annotator hands back the .seg.nrrd of the package as it is (segments named as organs): --wait shows the verdict
    case = state.queue[0]
    package = newest_package(layout, case)
    seg = package.folder / "pseudo_label.seg.nrrd"

    def sensor_tick():
        time.sleep(1.5)
        with dg.DagsterInstance.get() as instance, dg.build_sensor_context(instance=instance, resources=make_resources(cfg)) as ctx:
            submissions_sensor(ctx)

    ticker = threading.Thread(target=sensor_tick)
    ticker.start()
    code = main(["submit", case, "--label", str(seg), "--annotator", "dr_slicer", "--wait", "60"])
    ticker.join()
    out = capsys.readouterr().out
    assert code == 0 and f"answering work package {package.package_id}" in out and f"accepted: {case}" in out
    assert main(["submit", case, "--label", str(seg), "--annotator", "dr_slicer", "--wait", "0.5"]) == 2  # no sensor: says so
    assert "no verdict" in capsys.readouterr().err

    assert main(["reassemble", "--chunk", "3"]) == 0
    assert "reassembled 5 of 5 ingested cases" in capsys.readouterr().out
    prov = cat.read("provenance").query("case_id == @case")
    assert "revised" in set(prov.source) and set(prov.annotator.dropna()) == {"dr_slicer"}
    assert main(["export", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "exported 5 cases" in out and "revised" in out
    assert main(["export", str(tmp_path / "out")]) == 2  # never overwrites: one line, exit 2
    assert "not empty" in capsys.readouterr().err
