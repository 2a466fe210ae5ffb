"""The data checks behind the asset checks can fail."""

import numpy as np

from alqa_core.checks import grid_mismatches, unknown_label_values
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T


def test_grid_and_value_checks_catch_bad_files(tmp_path):
    raw = write_nifti(tmp_path / "raw.nii.gz", np.zeros((4, 5, 6), np.int16), np.eye(4))
    good = write_nifti(tmp_path / "good.nii.gz", np.ones((4, 5, 6), np.uint8), np.eye(4))
    shifted = write_nifti(tmp_path / "shift.nii.gz", np.ones((4, 5, 6), np.uint8), np.diag([1, 1, 1.5, 1]))
    assert grid_mismatches([("a", good, raw), ("b", shifted, raw)]) == ["b"]
    bad = write_nifti(tmp_path / "bad.nii.gz", np.full((4, 5, 6), 42, np.uint8), np.eye(4))
    assert unknown_label_values([("a", good), ("b", bad)], T) == {"b": [42]}
