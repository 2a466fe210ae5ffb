"""Workspace paths never escape their folder, and every round keeps its own ensemble output."""

import pytest

from alqa_core.errors import AlqaInputError
from alqa_core.workspace import WorkspaceLayout, validate_case_id, validate_package_id


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a.b", "", "x" * 65, "abc\n", "caf\u00e9"])
def test_bad_case_ids_are_refused(bad):
    with pytest.raises(AlqaInputError, match="invalid case id"):
        validate_case_id(bad)


@pytest.mark.parametrize("bad", ["../r000-0123456789ab", "r000-0123456789ab/..", "r0-0123456789ab", "r000-0123456789AB", "r000-0123456789abc", ""])
def test_bad_package_ids_are_refused(bad):
    with pytest.raises(AlqaInputError, match="invalid work package id"):
        validate_package_id(bad)


def test_paths_are_derived_from_asset_case_and_round(tmp_path):
    ws = WorkspaceLayout(tmp_path)
    assert ws.raw_scan("c_1") == tmp_path / "raw_scans" / "c_1.nii.gz"
    assert ws.soft_prediction("c_1", "unet", 2) == tmp_path / "soft_predictions" / "round_002" / "c_1" / "unet.nii.gz"
    assert ws.attention_map("c_1", 0) != ws.attention_map("c_1", 1)
    assert ws.pseudo_label("c_1", 0) != ws.pseudo_label("c_1", 1)
    assert ws.work_package("c_1", "r002-0123456789ab") == tmp_path / "work_packages" / "c_1" / "r002-0123456789ab"
    assert ws.checkpoint("unet", 2) == tmp_path / "checkpoints" / "round_002" / "unet.pt"
    with pytest.raises(ValueError):
        ws.soft_prediction("c_1", "../x", 0)
