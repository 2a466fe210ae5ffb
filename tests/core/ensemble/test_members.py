"""Which members a case's ensemble has: exactly those the campaign names, less those whose file fails for the case.

Real phantom datasets, real NIfTI member files, a real catalog; the rules the CLI tests see from the user's side
(tests/dagster/test_new_user_campaign.py), here at the core's own boundary.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from alqa_core.case_errors import member_failures, open_case_errors
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.config.template import write_template
from alqa_core.ensemble.members import members_path
from alqa_core.ensemble.predict import predict_round
from alqa_core.ingest.cases import index_campaign, ingest_case_scan
from alqa_core.io.nifti import read_label, write_nifti
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.workspace import WorkspaceLayout


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    write_campaign(root / "campaign", CampaignSpec(n_cases=2, seed=3, spacing_mm=(8.0, 8.0, 8.0), test_fraction=0.0))
    return root / "campaign"


def _campaign(tmp_path, source, members: str):
    """The campaign copied, every case's truth dropped in as toolA, toolB and toolC; ``members`` is the YAML list."""
    campaign = tmp_path / "campaign"
    shutil.copytree(source, campaign)
    truth = campaign / "ground_truth" / "labelsTr"
    for ds in (campaign / "datasets").iterdir():
        for img in (ds / "imagesTr").glob("*_0000.nii.gz"):
            case = img.name[: -len("_0000.nii.gz")]
            gt = read_label(truth / f"{case}.nii.gz")
            for member in ("toolA", "toolB", "toolC"):
                write_nifti(ds / "predictions" / member / f"{case}.nii.gz", np.asarray(gt.array), gt.affine)
    datasets = tuple(str(p) for p in sorted((campaign / "datasets").iterdir()))
    cfg = write_template(tmp_path / "campaign.yaml", name="t", workspace_root=str(tmp_path / "ws"), datasets=datasets, architectures=(), spacing_mm=8.0)
    cfg.write_text(cfg.read_text().replace("external_members: []", "external_members:\n" + members))
    return load_campaign(cfg), campaign


def test_the_ensemble_is_the_members_named_and_a_member_folder_elsewhere_is_read(tmp_path, two_cases):
    outside = tmp_path / "tool_b_outputs"
    cfg, campaign = _campaign(tmp_path, two_cases, f"  - name: toolA\n  - name: toolB\n    folder: {outside}\n")
    datasets = sorted((campaign / "datasets").iterdir())
    shutil.copytree(datasets[0] / "predictions" / "toolB", outside)
    junk = datasets[0] / "predictions" / "old_model"
    junk.mkdir()
    (junk / "notes.txt").write_text("a listing would refuse this name; reading it would fail")  # never read
    index = index_campaign(cfg)
    case = index.datasets[0].case_ids[0]
    members = {r.member: r.path for r in index.predictions_of(case)}
    assert sorted(members) == ["toolA", "toolB"] and members["toolB"].parent == outside  # toolB from its folder, toolC unnamed
    assert index.unlisted_predictions == {"old_model": (junk,), "toolC": tuple(sorted(campaign.glob("datasets/*/predictions/toolC")))}
    other = index.datasets[1].case_ids[0]
    assert [r.member for r in index.predictions_of(other)] == ["toolA"]  # toolB's folder has no file for it


def test_a_failed_member_costs_the_member_and_too_few_left_refuse_the_case(tmp_path, two_cases):
    three = "".join(f"  - name: {m}\n" for m in ("toolA", "toolB", "toolC"))
    cfg, _ = _campaign(tmp_path, two_cases, three)
    layout, cat = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    index = index_campaign(cfg)
    first, second = sorted(index.cases)
    for case in (first, second):
        ingest_case_scan(index, case, layout, cat)
    bad = index.dataset_of(first).root / "predictions" / "toolC" / f"{first}.nii.gz"
    write_nifti(bad, np.zeros((4, 4, 4), np.uint8), np.eye(4))  # another grid

    result = predict_round(layout, cat, cfg, [first, second], 0)
    assert [i.name for i in result.members[first]] == ["toolA", "toolB"] and not result.errors
    assert [m["name"] for m in json.loads(members_path(layout, first, 0).read_text())] == ["toolA", "toolB"]
    failed = member_failures(cat)
    assert list(failed.case_id) == [first] and list(failed.member) == ["toolC"] and failed.file.iloc[0] == str(bad)
    assert "mis-registered" in failed.reason.iloc[0] and failed.went_on_with.iloc[0] == "toolA, toolB"
    assert open_case_errors(cat).empty  # the case was not refused

    # toolB fails too: one member left, the case is refused with both reasons (and its member rows give way to that)
    cut = index.dataset_of(first).root / "predictions" / "toolB" / f"{first}.nii.gz"
    cut.write_bytes(cut.read_bytes()[:100])
    result = predict_round(layout, cat, cfg, [first, second], 0)
    assert set(result.errors) == {first} and [i.name for i in result.members[second]] == ["toolA", "toolB", "toolC"]
    reason = open_case_errors(cat).set_index("case_id").reason[first]
    assert "1 left (toolA)" in reason and str(bad) in reason and str(cut) in reason and "truncated" in reason
    assert member_failures(cat).empty and not members_path(layout, first, 0).exists()  # no stale ensemble of an earlier attempt

    # the files fixed: the refusal closes, the case has its three members again
    shutil.copyfile(index.dataset_of(first).root / "predictions" / "toolA" / f"{first}.nii.gz", cut)
    shutil.copyfile(cut, bad)
    result = predict_round(layout, cat, cfg, [first, second], 0)
    assert not result.errors and [i.name for i in result.members[first]] == ["toolA", "toolB", "toolC"]
    assert open_case_errors(cat).empty and member_failures(cat).empty
