"""A whole round through real materializations, the CLI's inbox and the sensors.

Tiny phantoms at 6 mm and a tiny UNet trained for a couple of epochs: the point
is the platform loop (lineage, catalog, sensors, run keys), not accuracy.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.queue.packages import newest_package
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.annotation.labelled.status import campaign_status
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.config.sections import LR_FINE_TUNE
from alqa_core.ensemble.checkpoint import checkpoint_sha256, load_checkpoint
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.nifti import read_label, write_nifti
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import ROUND_ASSETS, round_sensor, submissions_sensor

from .conftest import campaign_yaml, make_resources


def _materialize(instance, resources, selection, keys=None, partition=None, tags=None):
    d = defs()
    run_tags = dict(tags or {})
    if keys:
        run_tags.update({"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    result = dg.materialize(list(d.assets) + list(d.asset_checks), selection=selection, instance=instance, resources=resources, tags=run_tags, partition_key=partition)
    assert result.success
    return result


@pytest.fixture
def round0(tmp_path, phantom_campaign, instance):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, ["raw_scans", "original_labels", "preprocessed_volumes"], keys)
    _materialize(instance, resources, ROUND_ASSETS, keys)
    return tmp_path, resources, keys, Catalog(tmp_path / "ws" / "catalog")


def _tick(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        return sensor(ctx), ctx


@pytest.mark.slow
def test_a_round_then_fine_tune_to_round_one(round0, instance, phantom_campaign):
    tmp_path, resources, keys, cat = round0
    state = round_state(cat)
    assert state.round_index == 0 and len(state.queue) >= 1
    assert state.state == "queued" and state.record.attempts == 1
    case_id = state.queue[0]
    package = newest_package(WorkspaceLayout(tmp_path / "ws"), case_id)
    task = json.loads((package.folder / "task.json").read_text())
    assert task["case_id"] == case_id and task["package_id"] == package.package_id == cat.read("queue").query("case_id == @case_id").package_id.iloc[0]
    assert len(cat.read("attention_organ").query("round == 0").case_id.unique()) == len(keys)

    # the annotator revises the top case with the (hidden) ground truth, through the CLI's inbox writer
    truth = read_label(phantom_campaign / "ground_truth" / "labelsTr" / f"{case_id}.nii.gz")
    revised = tmp_path / "revised.nii.gz"
    write_nifti(revised, np.asarray(truth.array), truth.affine)
    write_submission(tmp_path / "ws" / "inbox", case_id, "dr_test", revised, emptied_organs=tuple(resources["campaign"].config().organ_table.names))

    result, ctx = _tick(submissions_sensor, instance, resources)
    assert [r.partition_key for r in result.run_requests] == [case_id]
    request = result.run_requests[0]
    again, _ = _tick(submissions_sensor, instance, resources, cursor=result.cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # not launched yet: asked again, same key
    _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=case_id, tags={"dagster/run_key": request.run_key})
    third, _ = _tick(submissions_sensor, instance, resources, cursor=again.cursor)
    assert third.run_requests == []  # launched: a repeated tick yields none

    prov = cat.read("provenance").query("case_id == @case_id")
    assert set(prov.source) <= {"original", "revised"} and "revised" in set(prov.source)
    effort = cat.read("effort").query("case_id == @case_id")
    assert len(effort) and (effort.minutes >= 0).all() and effort.annotator.iloc[0] == "dr_test"
    status = campaign_status(WorkspaceLayout(tmp_path / "ws")).render()
    assert "effort per round and annotator" in status and "dr_test" in status
    assert round_state(cat).queue_answered

    assert round_state(cat).state == "answered"
    request, _ = _tick(round_sensor, instance, resources)
    assert isinstance(request, dg.RunRequest) and request.run_key == "round:1:1" and request.tags["alqa/round"] == "1"
    _materialize(instance, resources, ROUND_ASSETS, keys)
    assert round_state(cat).round_index == 1
    # round 1's checkpoint was fine-tuned from round 0's: its lineage names that file by sha256, at the fine-tuning rate
    parent, child = (tmp_path / "ws" / "checkpoints" / f"round_00{r}" / "unet.pt" for r in (0, 1))
    meta = load_checkpoint(child).meta
    assert meta.lineage.parent_path == str(parent) and meta.lineage.parent_sha256 == checkpoint_sha256(parent)
    assert meta.run_info["lr"] == LR_FINE_TUNE and load_checkpoint(parent).meta.run_info["lr"] != LR_FINE_TUNE
    # every round keeps its own predictions, and every case was reassembled with round 1's pseudo labels
    for r in (0, 1):
        assert all((tmp_path / "ws" / "soft_predictions" / f"round_00{r}" / k / "members.json").exists() for k in keys)
    prov = cat.read("provenance")
    assert set(prov.case_id) == set(keys) and set(prov.query("source == 'pseudo'").pseudo_round) == {1}
    ts = cat.read("training_set").query("round == 1")
    assert case_id in set(ts.case_id[ts.origin == "reassembled"])
    metrics = cat.read("metrics")
    assert set(metrics["round"]) == {0, 1}


@pytest.mark.slow
def test_confirming_the_top_case_converges(round0, instance):
    tmp_path, resources, keys, cat = round0
    top = round_state(cat).queue[0]
    package = newest_package(WorkspaceLayout(tmp_path / "ws"), top)
    write_submission(tmp_path / "ws" / "inbox", top, "dr_test", None, kind="confirmed", package=package.package_id)
    result, _ = _tick(submissions_sensor, instance, resources)
    _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=top, tags={"dagster/run_key": result.run_requests[0].run_key})
    state = round_state(cat)
    assert state.converged and state.state == "converged", state.decision
    skip, _ = _tick(round_sensor, instance, resources)
    assert isinstance(skip, dg.SkipReason) and "converged" in skip.skip_message
    # the organs the case's dataset does not annotate are "confirmed", with the voxels of the package's pseudo label
    cases = cat.read("cases").set_index("case_id")
    annotated = {o for o in str(cases.loc[top].annotated_organs).split(",") if o}
    prov = cat.read("provenance").query("case_id == @top").set_index("organ")
    table = resources["campaign"].config().organ_table
    assert {o: prov.source[o] for o in table.names} == {o: "original" if o in annotated else "confirmed" for o in table.names}
    assert set(prov.annotator[prov.source == "confirmed"]) == {"dr_test"}
    label, shown = read_label(tmp_path / "ws" / "reassembled_labels" / f"{top}.nii.gz").array, read_label(package.pseudo_label_path).array
    for organ in table.names:
        if organ not in annotated:
            v = table.value_of(organ)
            np.testing.assert_array_equal(np.asarray(label) == v, np.asarray(shown) == v)


def test_malformed_submission_is_quarantined(tmp_path, phantom_campaign, instance):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, ["raw_scans"], keys)
    bad = tmp_path / "bad.nii.gz"
    write_nifti(bad, np.zeros((3, 3, 3), np.uint8), np.eye(4))
    entry = write_submission(tmp_path / "ws" / "inbox", keys[0], "dr_test", bad)
    result, _ = _tick(submissions_sensor, instance, resources)
    assert result.run_requests == []
    reason = (tmp_path / "ws" / "quarantine" / entry.name / "reason.txt").read_text()
    assert "not on the case's grid" in reason and entry.name in reason
    row = Catalog(tmp_path / "ws" / "catalog").read("submissions").iloc[0]
    assert row.status == "rejected"


@pytest.mark.slow
def test_qa_montages_grades_regressor_and_outlier_queue(round0, instance, monkeypatch, capsys):
    from alqa_dagster.cli import main as alqa

    tmp_path, resources, keys, cat = round0
    _materialize(instance, resources, ["qa_montages"], keys)
    assert (tmp_path / "ws" / "qa_montages" / f"{keys[0]}_1344.png").exists()
    monkeypatch.setenv("ALQA_CAMPAIGN", str(resources["campaign"].config_path))
    failure = keys[-1]
    for case, grade in zip(keys, ["0", "1", "0", "1", "2"]):
        assert alqa(["grade", case, grade, "--grader", "dr_qa"]) == 0
    assert alqa(["grade", keys[0], "2", "--grader", "dr_qa"]) == 0  # a regrade: a new row, the latest counts
    grades = cat.read("qa_grades")
    assert len(grades) == 6
    _materialize(instance, resources, ["qa_regressor"])
    scores = cat.read("qa_scores")
    assert set(scores.case_id) == set(keys) and scores.score.between(0, 2).all()
    # the outlier strategy puts the graded failures first
    text = Path(resources["campaign"].config_path).read_text().replace("strategy: attention", "strategy: outliers")
    Path(resources["campaign"].config_path).write_text(text)
    resources = make_resources(Path(resources["campaign"].config_path))
    _materialize(instance, resources, ["annotation_queue"])
    queue = cat.read("queue").query("round == 0").sort_values("position")
    assert set(queue.case_id.iloc[:2]) <= {failure, keys[0]} and queue.case_id.iloc[0] in {failure, keys[0]}


def test_external_members_only_campaign_gets_attention_queue_and_packages(tmp_path, phantom_campaign, instance):
    """No architecture trained here: two external members (label maps) drive attention and the queue."""
    from .test_campaign import external_campaign

    cfg_path = external_campaign(tmp_path, phantom_campaign)  # tool B over-segments the liver
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, ["raw_scans", "original_labels", "preprocessed_volumes"], keys)
    _materialize(instance, resources, ROUND_ASSETS, keys)
    cat = Catalog(tmp_path / "ws" / "catalog")
    organ = cat.read("attention_organ")
    scored_liver = organ[(organ.organ == "liver") & organ.scored]
    assert len(scored_liver) and (scored_liver.attention_ml > 0).all()  # the disagreement is seen
    assert (organ[organ.organ == "spleen"].attention_ml == 0).all()  # where the tools agree, none
    state = round_state(cat)
    assert state.queue and newest_package(WorkspaceLayout(tmp_path / "ws"), state.queue[0]) is not None
    assert not (tmp_path / "ws" / "checkpoints").exists()
    assert round_state(cat).record.facts["members_trained"] == 0  # nothing to train is not an error: the round goes on
