"""A campaign reaches its product: two rounds with a bad scan, a rejected, a late and a confirming answer, a round
closed by hand, and an export in which every ingested case is present with the right provenance per organ.

External members only (two "tools" made from the hidden ground truth, one over-segmenting the liver), so no
network is trained and the rounds run in seconds; the sensors, run keys, state table and export are the real ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.queue.packages import case_packages, newest_package
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.annotation.labelled.status import campaign_status
from alqa_core.case_errors import open_case_errors
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.export.nnunet import export_nnunet
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.nifti import read_label, write_nifti
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.rounds import read_rounds
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import ROUND_ASSETS, ROUND_TAG, new_cases_sensor, round_sensor, submissions_sensor

from .conftest import campaign_yaml, make_resources

INGEST = ["raw_scans", "original_labels", "preprocessed_volumes"]


def _materialize(instance, resources, selection, keys=None, partition=None, tags=None, ok=True):
    d = defs()
    run_tags = dict(tags or {})
    if keys:
        run_tags.update({"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    result = dg.materialize(list(d.assets) + list(d.asset_checks), selection=selection, instance=instance, resources=resources,
                            tags=run_tags, partition_key=partition, raise_on_error=False)
    assert result.success is ok
    return result


def _tick(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        return sensor(ctx)


def external_campaign(tmp_path: Path, phantom_campaign: Path, disagree: bool = True) -> Path:
    """The phantom campaign with two external members per case; tool B over-segments the liver when ``disagree``."""
    campaign = tmp_path / "campaign"
    shutil.copytree(phantom_campaign, campaign)
    truth = campaign / "ground_truth" / "labelsTr"
    for ds in (campaign / "datasets").iterdir():
        for img in (ds / "imagesTr").glob("*_0000.nii.gz"):
            case = img.name[: -len("_0000.nii.gz")]
            gt = read_label(truth / f"{case}.nii.gz")
            write_nifti(ds / "predictions" / "toolA" / f"{case}.nii.gz", np.asarray(gt.array), gt.affine)
            other = np.array(gt.array)
            if disagree:
                other[ndimage.binary_dilation(other == 5, iterations=2) & (other == 0)] = 5
            write_nifti(ds / "predictions" / "toolB" / f"{case}.nii.gz", other, gt.affine)
    members = "external_members:\n  - name: toolA\n    class_map: organ_table\n  - name: toolB\n    class_map: organ_table"
    cfg = campaign_yaml(tmp_path, campaign, architectures=())
    cfg.write_text(cfg.read_text().replace("external_members: []", members).replace("  min_cases: 1\n", "  min_cases: 1\n  count: 2\n"))
    return cfg


def _bad_scans(campaign: Path) -> dict[str, str]:
    """A truncated and a NaN scan among the cases: case -> the reason the ingest must give."""
    images = campaign / "datasets" / "Dataset001_PhantomFull" / "imagesTr"
    data = next(images.glob("*_0000.nii.gz")).read_bytes()
    (images / "PhFull_bad1_0000.nii.gz").write_bytes(data[: len(data) // 2])  # a copy cut off half-way
    hu = np.zeros((12, 12, 8), np.float32)
    hu[3:6, 3:6, 2:4] = np.nan
    nib.save(nib.Nifti1Image(hu, np.diag([6.0, 6.0, 6.0, 1.0])), images / "PhFull_bad2_0000.nii.gz")
    return {"PhFull_bad1": "truncated", "PhFull_bad2": "NaN"}


@pytest.fixture(scope="module")
def eight_phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eight")
    write_campaign(root / "campaign", CampaignSpec(n_cases=8, seed=11, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.25, test_fraction=0.0))
    return root / "campaign"


@pytest.mark.slow
def test_two_rounds_to_an_export_of_every_case_with_its_provenance(tmp_path, eight_phantoms, instance):
    cfg_path = external_campaign(tmp_path, eight_phantoms)
    bad = _bad_scans(tmp_path / "campaign")
    resources = make_resources(cfg_path)
    cfg = load_campaign(cfg_path)
    layout, cat = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    table = cfg.organ_table

    # ten cases, one truncated and one NaN: the new-cases sensor registers all, one batched ingest refuses those two only
    found = _tick(new_cases_sensor, instance, resources)
    keys = list(found.dynamic_partitions_requests[0].partition_keys)
    assert len(keys) == 10
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, INGEST, keys)
    errors = open_case_errors(cat)
    assert sorted(errors.case_id) == sorted(bad)
    for case, word in bad.items():
        reason = errors.set_index("case_id").reason[case]
        assert word.lower() in reason.lower(), reason
    good = [k for k in keys if k not in bad]
    assert len(good) == 8 and sorted(cat.read("cases").case_id) == sorted(good)
    status = campaign_status(layout).render()
    assert "cases with an open error: 2" in status and all(c in status for c in bad)

    # round 0 runs over the ingested cases only
    _materialize(instance, resources, ROUND_ASSETS, keys, tags={ROUND_TAG: "0"})
    s = round_state(cat)
    assert s.round_index == 0 and s.state == "queued" and len(s.queue) == 2
    q0, q1 = s.queue
    assert set(cat.read("provenance").case_id) == set(good)  # every ingested case has a label after round 0
    assert read_rounds(cat)[0].facts["members_trained"] == 0  # nothing to train (external members): skipped, said why

    # a rejected submission, then a revision of the top case
    wrong = tmp_path / "wrong.nii.gz"
    write_nifti(wrong, np.zeros((3, 3, 3), np.uint8), np.eye(4))
    write_submission(layout.inbox, q0, "dr_a", wrong)
    truth = tmp_path / "campaign" / "ground_truth" / "labelsTr"
    revised = read_label(truth / f"{q0}.nii.gz")
    write_submission(layout.inbox, q0, "dr_a", truth / f"{q0}.nii.gz", emptied_organs=table.names, package=newest_package(layout, q0).package_id)
    result = _tick(submissions_sensor, instance, resources)
    subs = cat.read("submissions")
    assert sorted(subs.status) == ["accepted", "rejected"]
    for r in result.run_requests:
        _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=r.partition_key, tags={"dagster/run_key": r.run_key})
    assert round_state(cat).state == "queued" and round_state(cat).pending == (q1,)
    waiting = _tick(round_sensor, instance, resources)
    assert isinstance(waiting, dg.SkipReason) and "waiting for 1 of 2" in waiting.skip_message

    # the round is closed by hand: q1 goes back to the pool, and the round sensor starts round 1
    assert _cli(["round", "close", "--reason", "dr_b is away"], cfg_path) == 0
    assert round_state(cat).state == "closed" and q1 in round_state(cat).record.reason
    request = _tick(round_sensor, instance, resources)
    assert isinstance(request, dg.RunRequest) and request.run_key == "round:1:1"
    round0_package_q1 = newest_package(layout, q1).package_id
    _materialize(instance, resources, ROUND_ASSETS, keys, tags=request.tags)
    s = round_state(cat)
    assert s.round_index == 1 and s.state == "queued"

    # a late answer: dr_b revises q1 in the package of round 0 (closed); it still counts, for q1
    write_submission(layout.inbox, q1, "dr_b", truth / f"{q1}.nii.gz", emptied_organs=table.names, package=round0_package_q1)
    # and the top case of round 1 is confirmed: the campaign converges
    top = s.queue[0]
    write_submission(layout.inbox, top, "dr_c", None, kind="confirmed", package=newest_package(layout, top).package_id)
    result = _tick(submissions_sensor, instance, resources)
    assert len(result.run_requests) == 2
    for r in result.run_requests:
        _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=r.partition_key, tags={"dagster/run_key": r.run_key})
    assert round_state(cat).state == "converged"
    assert isinstance(_tick(round_sensor, instance, resources), dg.SkipReason)

    # the export: every ingested case, and each organ's source is what the answers and the datasets say
    export = export_nnunet(layout, tmp_path / "export", cfg)
    assert sorted(export.cases) == sorted(good) and not export.missing
    prov = pd.read_csv(tmp_path / "export" / "provenance.csv")
    cases = cat.read("cases").set_index("case_id")
    accepted = cat.read("submissions").query("status == 'accepted'").sort_values("submitted_at")
    latest = accepted.groupby("case_id").tail(1).set_index("case_id")
    for case in good:
        annotated = {o for o in str(cases.annotated_organs[case]).split(",") if o}
        answer = latest.kind.get(case)
        for organ in table.names:
            row = prov[(prov.case_id == case) & (prov.organ == organ)].iloc[0]
            expected = "original" if organ in annotated else answer or "pseudo"
            assert row.source == expected, (case, organ, row.source, expected)
            if expected in ("revised", "confirmed"):
                assert row.annotator == latest.annotator[case]
            if expected == "pseudo":
                assert row.pseudo_round == 1
    # the late revision is the label of q1 wherever its dataset does not annotate
    q1_label = read_label(tmp_path / "export" / "labelsTr" / f"{q1}.nii.gz").array
    for organ in table.names:
        if organ not in str(cases.annotated_organs[q1]):
            v = table.value_of(organ)
            np.testing.assert_array_equal(np.asarray(q1_label) == v, np.asarray(read_label(truth / f"{q1}.nii.gz").array) == v)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "dr_a" in card and "dr_b" in card and "dr_c" in card and all(c in card for c in bad)
    assert len(case_packages(layout, q1)) >= 1 and revised.shape == read_label(layout.reassembled_label(q0)).shape

    # a refused scan whose file is fixed is retried by the new-cases sensor, and then it is a case like the others
    images = tmp_path / "campaign" / "datasets" / "Dataset001_PhantomFull" / "imagesTr"
    shutil.copyfile(next(p for p in sorted(images.glob("*_0000.nii.gz")) if "bad" not in p.name), images / "PhFull_bad1_0000.nii.gz")
    retry = _tick(new_cases_sensor, instance, resources)
    [request] = retry.run_requests
    assert request.partition_key == "PhFull_bad1" and request.run_key.startswith("retry:PhFull_bad1:")
    _materialize(instance, resources, INGEST, partition="PhFull_bad1", tags={"dagster/run_key": request.run_key})
    assert sorted(open_case_errors(cat).case_id) == ["PhFull_bad2"] and "PhFull_bad1" in set(cat.read("cases").case_id)
    assert isinstance(_tick(new_cases_sensor, instance, resources), dg.SkipReason)  # fixed: nothing left to retry


def _cli(argv, cfg_path) -> int:
    import os

    from alqa_dagster.cli import main

    old = os.environ.get("ALQA_CAMPAIGN")
    os.environ["ALQA_CAMPAIGN"] = str(cfg_path)
    try:
        return main(argv)
    finally:
        if old is None:
            os.environ.pop("ALQA_CAMPAIGN", None)
        else:
            os.environ["ALQA_CAMPAIGN"] = old


def test_an_empty_queue_converges(tmp_path, phantom_campaign, instance):
    """Two tools that agree everywhere: no case has attention, the queue is empty, and that is convergence."""
    cfg_path = external_campaign(tmp_path, phantom_campaign, disagree=False)
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, INGEST, keys)
    _materialize(instance, resources, ROUND_ASSETS, keys)
    cat = Catalog(tmp_path / "ws" / "catalog")
    s = round_state(cat)
    assert s.state == "converged" and s.queue == () and "empty" in s.record.reason
    skip = _tick(round_sensor, instance, resources)
    assert isinstance(skip, dg.SkipReason) and "converged" in skip.skip_message


@pytest.mark.slow
def test_a_failed_round_is_retried_and_a_queued_round_times_out(tmp_path, phantom_campaign, instance):
    """A round whose training fails stays opened; the round sensor launches it again under a new run key."""
    from alqa_dagster.resources import DeviceResource

    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, INGEST, keys)
    cat = Catalog(tmp_path / "ws" / "catalog")
    # attempt 1 asks for a GPU this machine does not have: model_checkpoints fails, the run fails
    broken = {**resources, "device": DeviceResource(device="cuda")}
    _materialize(instance, broken, ROUND_ASSETS, keys, tags={ROUND_TAG: "0", "dagster/run_key": "round:0:1"}, ok=False)
    assert round_state(cat).state == "opened"
    retry = _tick(round_sensor, instance, resources)
    assert isinstance(retry, dg.RunRequest) and retry.run_key == "round:0:2"  # the attempt, not the round, is the key
    _materialize(instance, resources, ROUND_ASSETS, keys, tags={**retry.tags, "dagster/run_key": retry.run_key})
    rec = read_rounds(cat)[0]
    assert rec.state == "queued" and rec.attempts == 2
    # a queued round past rounds.timeout_hours is closed by the sensor, which then starts the next round
    cfg_path.write_text(cfg_path.read_text().replace("timeout_hours: null", "timeout_hours: 0.000001"))
    resources = make_resources(cfg_path)
    nxt = _tick(round_sensor, instance, resources)
    assert isinstance(nxt, dg.RunRequest) and nxt.run_key == "round:1:1"
    closed = read_rounds(cat)[0]
    assert closed.state == "closed" and "timed out" in closed.reason
    print("\nround-state table through the stall and its recovery:")
    print(cat.read("rounds")[["round", "state", "attempts", "reason", "opened_at", "trained_at", "queued_at", "closed_at"]].to_string(index=False))
