"""Adapter rules written once and used alike: what the round loop does next (round sensor and ``alqa round``), which
assets a run materializes, which cases are ingested again, which package a submission answers, id checks, and
where the workspace is."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.labelled.rounds import what_next
from alqa_core.annotation.queue.packages import package_of
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.case_errors import fixed_cases, record_case_error
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_ct, read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.workspace import WorkspaceLayout, validate_case_id, validate_package_id
from alqa_dagster.cli import main as alqa
from alqa_dagster.defs import jobs
from alqa_dagster.defs.automation import round_sensor

from ..conftest import walk_round
from .conftest import campaign_yaml, make_resources

REPO = Path(__file__).resolve().parents[2]


def _queue(cat: Catalog, t: int, cases) -> None:
    cat.write("queue", f"round_{t:03d}", pd.DataFrame([{"round": t, "position": i + 1, "case_id": c} for i, c in enumerate(cases)]))


def test_the_round_sensor_and_alqa_round_act_on_one_decision(tmp_path, phantom_campaign, instance, monkeypatch, capsys):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    resources = make_resources(cfg_path)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg_path))
    monkeypatch.delenv("ALQA_WORKSPACE", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cat = Catalog(tmp_path / "ws" / "catalog")

    def both() -> tuple[object, int, str]:
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            sensed = round_sensor(ctx)
        capsys.readouterr()
        code = alqa(["round"])
        return sensed, code, capsys.readouterr().out.strip()

    # no round yet: an operator starts round 0 (alqa round would; the sensor waits for it)
    sensed, code, _ = both()
    assert isinstance(sensed, dg.SkipReason) and "round 0" in sensed.skip_message and code == 2  # no case registered yet: says so
    # a queued round with pending cases: both wait, for the same reason
    walk_round(cat, 0, "queued")
    _queue(cat, 0, ["a", "b"])
    sensed, code, printed = both()
    assert isinstance(sensed, dg.SkipReason) and code == 1 and printed == sensed.skip_message and "2 of 2" in printed
    # converged: both stop
    walk_round(cat, 0, "converged", "the annotator confirmed the top case")
    sensed, code, printed = both()
    assert isinstance(sensed, dg.SkipReason) and code == 0 and printed == sensed.skip_message and "converged" in printed
    # a finished round: the sensor launches the round the decision names (alqa round runs that round), tagged with it
    walk_round(cat, 1, "closed", "by hand")
    instance.add_dynamic_partitions("cases", ["a", "b"])
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        request = round_sensor(ctx)
    assert what_next(cat).run == 2 and isinstance(request, dg.RunRequest) and request.tags[jobs.ROUND_TAG] == "2"


def _asset_name_lists(source: str, names: set[str]) -> list[int]:
    """Lines of list/tuple literals naming two or more assets, outside an asset's ``deps=``."""
    tree = ast.parse(source)
    deps = {id(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "deps"}
    return [
        n.lineno for n in ast.walk(tree)
        if isinstance(n, (ast.List, ast.Tuple)) and id(n) not in deps
        and sum(isinstance(e, ast.Constant) and e.value in names for e in n.elts) >= 2
    ]


def test_which_assets_a_run_materializes_is_written_once():
    from alqa_dagster.definitions import defs

    names = {k.path[-1] for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert set(jobs.ROUND_ASSETS) <= names and set(jobs.INGEST_ASSETS) <= names and set(jobs.REVISION_ASSETS) <= names
    offenders = [
        f"{p.relative_to(REPO)}:{line}"
        for p in sorted((REPO / "alqa_dagster").rglob("*.py")) if p != REPO / "alqa_dagster" / "defs" / "jobs.py"
        for line in _asset_name_lists(p.read_text(), names)
    ]
    assert offenders == []
    assert _asset_name_lists('materialize(instance, ["raw_scans", "original_labels"])', names) == [1]  # the check does see one
    assert jobs.ROUND_ASSETS == jobs.ROUND_START + jobs.ROUND_CASES + jobs.ROUND_END  # alqa round's three parts are round_job


def test_alqa_ingest_and_the_new_cases_sensor_retry_the_same_cases(tmp_path):
    cat = Catalog(tmp_path / "catalog")
    fixed, untouched, gone = (tmp_path / f"{n}.nii.gz" for n in ("fixed", "untouched", "gone"))
    for f in (fixed, untouched, gone):
        f.write_bytes(b"broken")
    for case, f in (("c_fixed", fixed), ("c_untouched", untouched), ("c_gone", gone)):
        record_case_error(cat, case, "raw_scans", f, "truncated", f)
    fixed.write_bytes(b"repaired, longer")
    gone.unlink()
    assert [c for c, _ in fixed_cases(cat)] == ["c_fixed"]
    assert fixed_cases(cat, known={"c_untouched"}) == []  # a case no dataset lists any more is not retried


def test_which_package_a_submission_answers(tmp_path, phantom_campaign):
    from fastapi import HTTPException

    from alqa_dagster.serve.files import package_of as served_package
    from alqa_dagster.serve.ids import ImageRef

    layout = WorkspaceLayout(tmp_path / "ws")
    case = sorted((phantom_campaign / "datasets").iterdir())[0]
    image = next((case / "imagesTr").glob("*_0000.nii.gz"))
    case_id = image.name[: -len("_0000.nii.gz")]
    assert package_of(layout, case_id) is None
    with pytest.raises(AlqaInputError, match="only a queued case can be confirmed"):
        package_of(layout, case_id, required=True)
    ct = read_ct(image)
    truth = read_label(phantom_campaign / "ground_truth" / "labelsTr" / f"{case_id}.nii.gz")
    first = write_work_package(layout.work_packages(case_id), case_id, 0, ct, truth, np.zeros((len(T), *ct.shape), np.uint8), ("liver",), T)
    second = write_work_package(layout.work_packages(case_id), case_id, 1, ct, truth, np.ones((len(T), *ct.shape), np.uint8), ("liver",), T)
    assert package_of(layout, case_id).package_id == second.package_id  # none named: the newest
    assert package_of(layout, case_id, first.package_id).package_id == first.package_id

    class State:
        pass

    state = State()
    state.layout = layout
    assert served_package(state, ImageRef(case_id)).package_id == second.package_id  # the server follows the same rule
    with pytest.raises(HTTPException) as refused:
        served_package(state, ImageRef(case_id, "r009-0123456789ab"))
    assert refused.value.status_code == 404


def test_the_server_checks_ids_by_the_workspace_rules():
    from alqa_dagster.serve.ids import BadId, check_case_id, check_package_id, parse_image_id

    for bad, check, rule in (("../c1", check_case_id, validate_case_id), ("r1-zz", check_package_id, validate_package_id)):
        with pytest.raises(AlqaInputError) as core:
            rule(bad)
        with pytest.raises(BadId) as served:
            check(bad)
        assert str(served.value) == core.value.reason
    with pytest.raises(BadId, match="invalid image id 'c 1': invalid case id 'c 1'"):
        parse_image_id("c 1")
    assert parse_image_id("c1.r000-0123456789ab").package_id == "r000-0123456789ab"


def test_the_cli_and_the_resources_find_the_same_workspace(tmp_path, phantom_campaign, monkeypatch):
    from alqa_dagster.cli.common import workspace_layout
    from alqa_dagster.resources import CampaignResource, WorkspaceResource

    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg_path))
    campaign = CampaignResource(config_path=str(cfg_path))
    monkeypatch.delenv("ALQA_WORKSPACE", raising=False)
    assert workspace_layout() == WorkspaceResource(campaign=campaign).layout() == load_campaign(cfg_path).layout()
    assert workspace_layout().root == (tmp_path / "ws").resolve()
    monkeypatch.setenv("ALQA_WORKSPACE", str(tmp_path / "elsewhere"))
    assert workspace_layout() == WorkspaceResource(campaign=campaign, root=str(tmp_path / "elsewhere")).layout()
    assert workspace_layout().root == (tmp_path / "elsewhere").resolve()
    cfg, layout, cat = WorkspaceResource(campaign=campaign, root=str(tmp_path / "elsewhere")).open()
    assert cfg == campaign.config() and layout == workspace_layout() and cat.root == layout.catalog
