"""Workspace paths never escape their folder."""

import pytest

from alqa_core.errors import AlqaInputError
from alqa_core.workspace import WorkspaceLayout, validate_case_id


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a.b", "", "x" * 65, "abc\n", "caf\u00e9"])
def test_bad_case_ids_are_refused(bad):
    with pytest.raises(AlqaInputError, match="invalid case id"):
        validate_case_id(bad)


def test_paths_are_derived_from_asset_and_case(tmp_path):
    ws = WorkspaceLayout(tmp_path)
    assert ws.raw_scan("c_1") == tmp_path / "raw_scans" / "c_1.nii.gz"
    assert ws.soft_prediction("c_1", "unet") == tmp_path / "soft_predictions" / "c_1" / "unet.nii.gz"
    assert ws.checkpoint("unet", 2) == tmp_path / "checkpoints" / "round_002" / "unet.pt"
    with pytest.raises(ValueError):
        ws.soft_prediction("c_1", "../x")
