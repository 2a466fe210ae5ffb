"""The label value counts and centroids the submission checks use agree with the plain numpy they replaced, in every memory order."""

import numpy as np
import pytest

from alqa_core.annotation.intake.validation import _centroid_x_mm
from alqa_core.volume import label_value_counts

AFFINE = np.array([[-0.7, 0.1, 0.2, 3.0], [0.0, 0.8, 0.0, 1.0], [0.3, 0.0, 1.5, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _layouts(a: np.ndarray):
    return [a, np.asfortranarray(a), a[::2, :, 1:], a.transpose(2, 0, 1)]


@pytest.mark.parametrize("dtype,top", [(np.uint8, 12), (np.uint8, 255), (np.uint16, 3000), (np.int16, 40), (bool, 2)])
def test_value_counts_match_unique(dtype, top):
    rng = np.random.default_rng(top)
    # more voxels than one counting chunk, so the chunks' sums are exercised
    a = rng.integers(0, top, (130, 110, 90)).astype(dtype)
    for arr in _layouts(a):
        values, counts = label_value_counts(arr)
        expected_values, expected_counts = np.unique(arr, return_counts=True)
        np.testing.assert_array_equal(values, expected_values)
        np.testing.assert_array_equal(counts, expected_counts)


def test_value_counts_of_an_empty_label():
    values, counts = label_value_counts(np.zeros((0, 4, 4), np.uint8))
    assert values.size == 0 and counts.size == 0


def test_centroid_matches_the_coordinate_list_mean():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, (40, 30, 20)).astype(np.uint8)
    for arr in _layouts(a):
        mask = arr == 5
        expected = float((AFFINE @ np.append(np.argwhere(mask).mean(axis=0), 1.0))[0])
        assert _centroid_x_mm(mask, AFFINE) == pytest.approx(expected, abs=1e-9)
