"""A small external-members campaign run as a new user runs it (issue 24): the commands as typed, and what they print.

- the ensemble is exactly the members the campaign names: a folder under ``<dataset>/predictions/`` that no member
  names is reported once (by ``alqa init`` and ``alqa status``) and never read;
- a member whose file cannot be used for one case costs that member, not the case, while two members remain; with
  fewer, the case is refused with every member's reason;
- ``alqa ingest``, ``round``, ``reassemble`` and ``export`` print numbers that add up (ingested + refused = found);
- ``alqa init`` refuses a dataset that does not exist or holds no images;
- ``alqa status`` says what the campaign waits for in every round state, in the words of the round state machine.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.labelled.rounds import what_next
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.io.nifti import write_nifti
from alqa_core.rounds import transition
from alqa_dagster.cli import main

from .conftest import campaign_yaml
from .test_campaign import external_campaign

FULL = "Dataset001_PhantomFull"


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------------
# alqa init
# --------------------------------------------------------------------------------------------------


def test_init_refuses_a_dataset_that_does_not_exist_or_holds_no_images(tmp_path, phantom_campaign, capsys):
    good = phantom_campaign / "datasets" / FULL
    missing = tmp_path / "nonexistent"
    code, out, err = _run(["init", str(tmp_path / "a.yaml"), "--dataset", str(good), "--dataset", str(missing)], capsys)
    assert code == 2 and str(missing) in err and "does not exist" in err, (out, err)
    assert not (tmp_path / "a.yaml").exists()  # nothing written

    empty = tmp_path / "Dataset009_Empty"
    (empty / "imagesTr").mkdir(parents=True)
    (empty / "dataset.json").write_text((good / "dataset.json").read_text())
    code, out, err = _run(["init", str(tmp_path / "b.yaml"), "--dataset", str(empty)], capsys)
    assert code == 2 and str(empty) in err and "no images" in err, (out, err)
    assert not (tmp_path / "b.yaml").exists()

    code, out, _ = _run(["init", str(tmp_path / "c.yaml"), "--dataset", str(good)], capsys)
    assert code == 0 and "wrote" in out and load_campaign(tmp_path / "c.yaml").datasets[0].path == good


def test_init_reports_prediction_folders_once_and_offers_them_commented_out(tmp_path, phantom_campaign, capsys):
    external_campaign(tmp_path, phantom_campaign)  # predictions/toolA and predictions/toolB in every dataset
    datasets = sorted((tmp_path / "campaign" / "datasets").iterdir())
    (datasets[0] / "predictions" / "toolA" / "member.json").write_text(json.dumps({"class_map": "total"}))
    argv = ["init", str(tmp_path / "mine.yaml")] + [a for d in datasets for a in ("--dataset", str(d))]
    code, out, _ = _run(argv, capsys)
    assert code == 0, out
    for member in ("toolA", "toolB"):
        lines = [line for line in out.splitlines() if f"predictions/{member}/" in line]
        assert len(lines) == 1 and f"{len(datasets)} dataset" in lines[0] and "external_members" in lines[0], out
    text = (tmp_path / "mine.yaml").read_text()
    assert "#  - name: toolA\n#    class_map: total" in text and "#  - name: toolB\n#    class_map: organ_table" in text
    cfg = load_campaign(tmp_path / "mine.yaml")
    assert cfg.external_members == ()  # offered, not used: the user uncomments what they want
    uncommented = text.replace("#  - name: toolB\n#    class_map: organ_table", "  - name: toolB\n    class_map: organ_table")
    (tmp_path / "mine.yaml").write_text(uncommented.replace("external_members: []", "external_members:"))
    assert [m.name for m in load_campaign(tmp_path / "mine.yaml").external_members] == ["toolB"]


# --------------------------------------------------------------------------------------------------
# a campaign through ingest, round, status, close, reassemble and export
# --------------------------------------------------------------------------------------------------


def _broken_members_campaign(tmp_path: Path, phantom_campaign: Path) -> Path:
    """Members toolA, toolB, toolC; an old model's folder nobody names (unreadable files); two bad scans.

    PhUnlabeled_0000: toolC's file is on another grid (the case goes on with toolA and toolB).
    PhKidney_0000: toolB's file is cut off and toolC's is on another grid (only toolA is left: refused).
    PhFull_bad1: a truncated scan; PhFull_badlabel: a good scan with a label on another grid (both refused at ingest).
    """
    cfg = external_campaign(tmp_path, phantom_campaign)
    root = tmp_path / "campaign" / "datasets"
    for ds in root.iterdir():
        shutil.copytree(ds / "predictions" / "toolB", ds / "predictions" / "toolC")
        (ds / "predictions" / "old_model").mkdir()
        for f in (ds / "predictions" / "toolB").glob("*.nii.gz"):
            (ds / "predictions" / "old_model" / f.name).write_bytes(b"not a NIfTI: an old model's leftovers")
    other_grid = np.zeros((5, 5, 5), np.uint8)
    write_nifti(root / "Dataset005_PhantomUnlabeled" / "predictions" / "toolC" / "PhUnlabeled_0000.nii.gz", other_grid, np.eye(4))
    write_nifti(root / "Dataset003_PhantomKidney" / "predictions" / "toolC" / "PhKidney_0000.nii.gz", other_grid, np.eye(4))
    cut = root / "Dataset003_PhantomKidney" / "predictions" / "toolB" / "PhKidney_0000.nii.gz"
    cut.write_bytes(cut.read_bytes()[:200])
    images, labels = root / FULL / "imagesTr", root / FULL / "labelsTr"
    scan = next(images.glob("*_0000.nii.gz"))
    (images / "PhFull_bad1_0000.nii.gz").write_bytes(scan.read_bytes()[: scan.stat().st_size // 2])
    shutil.copyfile(scan, images / "PhFull_badlabel_0000.nii.gz")
    write_nifti(labels / "PhFull_badlabel.nii.gz", other_grid, np.eye(4))
    members = "  - name: toolB\n    class_map: organ_table"
    cfg.write_text(cfg.read_text().replace(members, members + "\n  - name: toolC\n    class_map: organ_table").replace("count: 2", "count: 1"))
    return cfg


def _numbers(pattern: str, text: str) -> tuple[int, ...]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return tuple(int(g) for g in found.groups())


@pytest.mark.slow
def test_a_campaign_uses_its_members_goes_on_without_a_failed_one_and_its_numbers_add_up(tmp_path, phantom_campaign, monkeypatch, capsys):
    cfg = _broken_members_campaign(tmp_path, phantom_campaign)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cat = Catalog(tmp_path / "ws" / "catalog")

    # alqa status before anything ran: the old model's folder is reported once, as never read
    code, out, _ = _run(["status"], capsys)
    [line] = [x for x in out.splitlines() if "predictions/old_model/" in x]
    assert code == 0 and "5 dataset(s)" in line and "never read" in line, out

    # alqa ingest: 7 cases found, 5 ingested, 2 refused, and alqa status says the same
    code, out, _ = _run(["ingest", "--chunk", "4"], capsys)
    assert code == 0 and _numbers(r"cases found: (\d+); ingested: (\d+); refused: (\d+)", out) == (7, 5, 2), out
    code, out, _ = _run(["status"], capsys)
    assert _numbers(r"(\d+) cases found: (\d+) ingested, (\d+) refused", out) == (7, 5, 2), out

    # alqa round: every case is predicted by the members named, and only by them
    code, out, _ = _run(["round", "--chunk", "4"], capsys)
    assert code == 0, out
    for case in ("PhFull_0000", "PhLiver_0000", "PhPancreas_0000"):
        members = json.loads((tmp_path / "ws" / "soft_predictions" / "round_000" / case / "members.json").read_text())
        assert [m["name"] for m in members] == ["toolA", "toolB", "toolC"], case
    # a failed member costs that member: PhUnlabeled_0000 goes on with toolA and toolB, and its attention sees their spread
    members = json.loads((tmp_path / "ws" / "soft_predictions" / "round_000" / "PhUnlabeled_0000" / "members.json").read_text())
    assert [m["name"] for m in members] == ["toolA", "toolB"]
    organ = cat.read("attention_organ")
    assert (organ[(organ.case_id == "PhUnlabeled_0000") & (organ.organ == "liver")].attention_ml > 0).all()
    # with one member left, the case is refused with every member's reason
    assert not (tmp_path / "ws" / "soft_predictions" / "round_000" / "PhKidney_0000" / "members.json").exists()
    errors = cat.read("case_errors")
    failed = errors[(errors.case_id == "PhUnlabeled_0000")]
    assert list(failed.member) == ["toolC"] and "PhUnlabeled_0000.nii.gz" in failed.file.iloc[0] and "mis-registered" in failed.reason.iloc[0]
    # what alqa round printed (its closing status) adds up, and names the refused case with both reasons
    assert _numbers(r"(\d+) cases found: (\d+) ingested, (\d+) refused", out) == (7, 5, 2), out
    assert _numbers(r"round 0 over (\d+) ingested cases: (\d+) predicted \((\d+) without a failed member\), (\d+) refused at prediction", out) == (5, 4, 1, 1), out
    [refusal] = [x for x in out.splitlines() if x.strip().startswith("PhKidney_0000 [soft_predictions]")]
    assert "toolB" in refusal and "toolC" in refusal and "mis-registered" in refusal, out
    [degraded] = [x for x in out.splitlines() if x.strip().startswith("PhUnlabeled_0000")]
    assert "toolC" in degraded and "went on with toolA, toolB" in degraded, out
    assert "old_model" not in "".join(errors.reason) and "old_model" not in out.split("never read")[-1]
    with dg.DagsterInstance.get() as instance:  # the case's own metadata in the UI says so too
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("soft_predictions"), asset_partitions=["PhUnlabeled_0000"]), limit=1).records
        meta = record.asset_materialization.metadata
        assert "toolC" in meta["members_failed"].value and meta["went_on_with"].value == "toolA, toolB"

    # alqa round close: the status says the next round is what the campaign waits for, not a verdict
    code, out, _ = _run(["round", "close", "--reason", "dr_a is away"], capsys)
    assert code == 0
    code, out, _ = _run(["status"], capsys)
    assert "waiting for the annotator's verdict" not in out and what_next(cat).reason in out and "round 1" in out, out

    # alqa reassemble and alqa export --partial: every number adds up to the cases found
    code, out, _ = _run(["reassemble", "--chunk", "4"], capsys)
    assert code == 0 and _numbers(r"(\d+) cases found: (\d+) ingested, (\d+) refused", out) == (7, 5, 2), out
    assert _numbers(r"reassembled (\d+) of (\d+) ingested cases \((\d+) without a label", out) == (4, 5, 1), out
    code, out, _ = _run(["export", str(tmp_path / "out"), "--partial"], capsys)
    assert code == 0 and _numbers(r"exported (\d+) cases", out) == (4,), out
    assert _numbers(r"(\d+) cases found: (\d+) ingested \((\d+) exported, (\d+) left out\), (\d+) refused", out) == (7, 5, 4, 1, 2), out
    assert len(pd.read_csv(tmp_path / "out" / "provenance.csv").case_id.unique()) == 4


# --------------------------------------------------------------------------------------------------
# alqa status in every round state
# --------------------------------------------------------------------------------------------------


def _queue(cat: Catalog, round_index: int, cases: list[str]) -> None:
    cat.write("queue", f"round_{round_index:03d}", pd.DataFrame(
        [{"round": round_index, "position": i, "case_id": c, "package_id": f"r{round_index:03d}-{i:012x}"} for i, c in enumerate(cases)]))


def _accept(cat: Catalog, round_index: int, case_id: str, kind: str) -> None:
    cat.write("submissions", f"s_{case_id}_{round_index}", pd.DataFrame([{
        "submission_id": f"s_{case_id}_{round_index}", "case_id": case_id, "status": "accepted", "round": round_index, "kind": kind,
        "entry": f"{case_id}.json", "annotator": "dr_a", "submitted_at": "2026-01-01T00:00:00+00:00", "reasons": "", "flags": ""}]))


def _reassembled(cat: Catalog, case_id: str, submission_id: str) -> None:
    cat.write("provenance", case_id, pd.DataFrame([{"case_id": case_id, "organ": "liver", "source": "revised", "submission_id": submission_id}]))


def _status(capsys) -> str:
    code, out, err = _run(["status"], capsys)
    assert code == 0, err
    return out


def test_status_says_what_the_campaign_waits_for_in_every_round_state(tmp_path, phantom_campaign, monkeypatch, capsys):
    cfg = campaign_yaml(tmp_path, phantom_campaign)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg))
    cat = Catalog(tmp_path / "ws" / "catalog")
    opened = {"training_cases": 3, "training_set_sha256": "x", "cases_refused": 0}

    def says(*phrases, absent=("waiting for the annotator's verdict",)):
        out = _status(capsys)
        decision = what_next(cat)
        assert decision.reason in out, out  # the state machine's own words, not a second reading of the table
        for p in phrases:
            assert p in out, (p, out)
        for p in absent:
            assert p not in out, (p, out)
        return out

    says("no round has started yet", "alqa round")
    transition(cat, 0, "opened", "training set fixed", **opened)
    says("round 0 is opened", "did not finish")
    transition(cat, 0, "opened", "again after a failed run", **opened)  # the round sensor's second attempt
    says("round 0 is opened (attempt 2)")
    transition(cat, 0, "trained", "trained", members_trained=1)
    transition(cat, 0, "predicted", "predicted", cases_predicted=3, cases_with_errors=0)
    says("round 0 is predicted")
    _queue(cat, 0, ["a", "b"])
    transition(cat, 0, "queued", "2 cases queued", queued=2)
    says("waiting for 2 of 2 queued cases", "alqa round close", absent=())  # here the top case's verdict is indeed awaited
    _accept(cat, 0, "a", "revised")
    says("waiting for 1 of 2 queued cases")
    _accept(cat, 0, "b", "revised")
    says("waiting for its answers to be reassembled")
    _reassembled(cat, "a", "s_a_0")
    _reassembled(cat, "b", "s_b_0")
    transition(cat, 0, "answered", "all 2 queued cases answered and reassembled")
    says("round 0 is answered", "round 1", "the round sensor")

    # round 1: closed by hand with a case unanswered
    transition(cat, 1, "opened", "training set fixed", **opened)
    transition(cat, 1, "trained", "trained", members_trained=1)
    transition(cat, 1, "predicted", "predicted", cases_predicted=3, cases_with_errors=0)
    _queue(cat, 1, ["c", "a"])
    transition(cat, 1, "queued", "2 cases queued", queued=2)
    code, _, _ = _run(["round", "close", "--reason", "dr_a is away"], capsys)
    assert code == 0
    says("round 1 is closed", "round 2")

    # round 2 times out (rounds.timeout_hours): status says the sensor closes it, and what comes next
    transition(cat, 2, "opened", "training set fixed", **opened)
    transition(cat, 2, "trained", "trained", members_trained=1)
    transition(cat, 2, "predicted", "predicted", cases_predicted=3, cases_with_errors=0)
    _queue(cat, 2, ["c"])
    transition(cat, 2, "queued", "1 case queued", queued=1)
    cfg.write_text(cfg.read_text().replace("timeout_hours: null", "timeout_hours: 0.000001"))
    out = _status(capsys)
    assert "timed out" in out and "round 3" in out and "waiting for 1 of 1" not in out and "verdict" not in out, out
    cfg.write_text(cfg.read_text().replace("timeout_hours: 0.000001", "timeout_hours: null"))

    # the top case confirmed: converged, nothing left to wait for
    _accept(cat, 2, "c", "confirmed")
    _reassembled(cat, "c", "s_c_2")
    transition(cat, 2, "converged", "the annotator confirmed the top case 'c' needs no revision")
    out = says("CONVERGED", "converged in round 2")
    assert "next:" not in out and "waiting:" not in out
