"""External members: label maps and 4D probabilities onto the organ table, registration checks."""

from __future__ import annotations

import numpy as np
import pytest

from alqa_core.ensemble.external import ExternalPrediction, external_soft_prediction, read_external_prediction
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE, ClassMap, class_map_preset
from alqa_core.volume import Grid, quantize_probabilities

AFFINE = np.array([[-0.9, 0, 0, 12.0], [0, -0.9, 0, -4.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
SHAPE = (20, 18, 12)
REF = Grid(SHAPE, AFFINE)
TABLE = DEFAULT_ORGAN_TABLE
TOTAL = class_map_preset("total")


def _ts_labels() -> np.ndarray:
    """TotalSegmentator v2 numbering: 52 aorta, 5 liver, 63 IVC, 7 pancreas, 117 (not in the table)."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[2:6, 2:6, 1:4] = 52
    lab[8:16, 3:12, 2:10] = 5
    lab[1:3, 10:14, 5:9] = 63
    lab[16:19, 14:17, 8:11] = 7
    lab[0:2, 0:2, 0:2] = 117
    return lab


def test_totalsegmentator_label_map_becomes_one_hot_per_organ(tmp_path):
    lab = _ts_labels()
    path = write_nifti(tmp_path / "case_0.nii.gz", lab, AFFINE)
    ext = read_external_prediction(path, TOTAL, TABLE, REF, "totalseg")
    pred = ext.prediction
    assert isinstance(ext, ExternalPrediction)
    assert pred.organs == TABLE.names and pred.member == "totalseg"
    assert pred.array.shape == (len(TABLE), *SHAPE) and pred.array.dtype == np.uint8
    for source_value, organ in [(52, "aorta"), (5, "liver"), (63, "inferior_vena_cava"), (7, "pancreas")]:
        channel = pred.array[TABLE.channel_of(organ)]
        assert np.array_equal(channel == 255, lab == source_value), organ
        assert set(np.unique(channel)) <= {0, 255}
    assert pred.array[TABLE.channel_of("spleen")].max() == 0  # covered but absent in this case
    assert pred.array[:, lab == 117].max() == 0  # a class outside the table is background
    assert ext.covered_organs == TABLE.names  # the total preset covers every default organ
    assert np.allclose(pred.affine, AFFINE)


def test_a_partial_member_records_what_it_does_not_predict():
    lab = np.zeros(SHAPE, dtype=np.int16)
    lab[3:9, 3:9, 3:9] = 2
    cmap = ClassMap("liver_only_model", {2: "liver", 3: "gall_bladder"})
    ext = external_soft_prediction(lab, AFFINE, cmap, TABLE, REF, "liver_model")
    assert ext.covered_organs == ("gallbladder", "liver")  # table order, synonyms resolved
    assert "spleen" in ext.missing_organs and "liver" not in ext.missing_organs
    assert ext.coverage_mask.tolist() == [n in ("gallbladder", "liver") for n in TABLE.names]
    covered = ext.covered()
    assert covered.organs == ("gallbladder", "liver") and covered.array.shape == (2, *SHAPE)
    assert np.array_equal(covered.array[1] == 255, lab == 2)
    assert covered.array[0].max() == 0  # gallbladder covered, predicted absent


def test_float_probabilities_are_remapped_through_the_class_map(tmp_path):
    rng = np.random.default_rng(0)
    n_channels = 60  # has TotalSegmentator's 52 (aorta) but not 63 (IVC)
    probs = rng.random((*SHAPE, n_channels), dtype=np.float32)
    path = write_nifti(tmp_path / "case_0.nii.gz", probs, AFFINE)
    ext = read_external_prediction(path, TOTAL, TABLE, REF, "ts_probs")
    pred = ext.prediction
    for source_value, organ in [(52, "aorta"), (5, "liver"), (1, "spleen"), (7, "pancreas")]:
        assert np.array_equal(pred.array[TABLE.channel_of(organ)], quantize_probabilities(probs[..., source_value]))
    assert pred.array[TABLE.channel_of("inferior_vena_cava")].max() == 0
    assert "inferior_vena_cava" not in ext.covered_organs and "aorta" in ext.covered_organs
    assert np.abs(pred.probabilities()[TABLE.channel_of("aorta")] - probs[..., 52]).max() <= 1 / 510 + 1e-7


def test_uint8_probabilities_pass_through_exactly(tmp_path):
    probs = np.random.default_rng(1).integers(0, 256, (*SHAPE, 10), dtype=np.uint8)
    path = write_nifti(tmp_path / "nnunet.nii.gz", probs, AFFINE)
    cmap = ClassMap("nnunet", {1: "spleen", 2: "kidney_right", 3: "kidney_left", 6: "liver"})
    ext = read_external_prediction(path, cmap, TABLE, REF, "nnunet")
    assert np.array_equal(ext.prediction.array[TABLE.channel_of("liver")], probs[..., 6])
    assert np.array_equal(ext.prediction.array[TABLE.channel_of("kidney_left")], probs[..., 3])
    assert ext.covered_organs == ("spleen", "kidney_right", "kidney_left", "liver")


def test_misregistered_file_names_the_file(tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5  # half a millimetre off
    path = write_nifti(tmp_path / "case_7.nii.gz", _ts_labels(), shifted)
    with pytest.raises(AlqaInputError, match="mis-registered") as err:
        read_external_prediction(path, TOTAL, TABLE, REF, "totalseg")
    assert "case_7.nii.gz" in str(err.value)

    wrong_shape = write_nifti(tmp_path / "case_8.nii.gz", _ts_labels()[:, :, :-1], AFFINE)
    with pytest.raises(AlqaInputError, match="case_8.nii.gz: mis-registered: shape"):
        read_external_prediction(wrong_shape, TOTAL, TABLE, REF, "totalseg")

    within = AFFINE.copy()
    within[0, 3] += 2e-4  # float noise from another writer is accepted
    ok = write_nifti(tmp_path / "case_9.nii.gz", _ts_labels(), within)
    assert read_external_prediction(ok, TOTAL, TABLE, REF, "totalseg").prediction.array.shape[1:] == SHAPE


def test_nan_or_out_of_range_probabilities_raise(tmp_path):
    probs = np.full((*SHAPE, 8), 0.5, dtype=np.float32)
    probs[3, 4, 5, 5] = np.nan
    path = write_nifti(tmp_path / "nan_case.nii.gz", probs, AFFINE)
    with pytest.raises(AlqaInputError, match="nan_case.nii.gz.*NaN"):
        read_external_prediction(path, TOTAL, TABLE, REF, "m")
    with pytest.raises(AlqaInputError, match="NaN"):  # the in-memory path checks too
        external_soft_prediction(probs, AFFINE, TOTAL, TABLE, REF, "m", "mem.nii.gz")

    probs = np.full((*SHAPE, 8), 0.5, dtype=np.float32)
    probs[0, 0, 0, 5] = 1.5
    with pytest.raises(AlqaInputError, match=r"logits.nii.gz: probability channel 5 lies in \[0.5, 1.5\]"):
        external_soft_prediction(probs, AFFINE, TOTAL, TABLE, REF, "m", "logits.nii.gz")


def test_non_integer_3d_labels_and_empty_coverage_raise(tmp_path):
    with pytest.raises(AlqaInputError, match="non-integer"):
        external_soft_prediction(np.full(SHAPE, 0.3, np.float32), AFFINE, TOTAL, TABLE, REF, "m", "p.nii.gz")
    with pytest.raises(AlqaInputError, match="covers none"):
        external_soft_prediction(_ts_labels(), AFFINE, ClassMap("x", {4: "heart"}), TABLE, REF, "m", "p.nii.gz")


def test_same_voxels_in_another_axis_order_are_reoriented_not_rejected(tmp_path):
    """A member written in LAS (flipped j) and with i/k swapped is the same grid: permute, don't resample."""
    lab = _ts_labels()
    flip_j = AFFINE.copy()
    flip_j[:, 1] *= -1
    flip_j[:3, 3] = AFFINE[:3, 3] + AFFINE[:3, 1] * (SHAPE[1] - 1)
    swapped = flip_j[:, [2, 1, 0, 3]]
    stored = np.transpose(lab[:, ::-1, :], (2, 1, 0))
    path = write_nifti(tmp_path / "las.nii.gz", stored, swapped)
    got = read_external_prediction(path, TOTAL, TABLE, REF, "ts").prediction
    want = external_soft_prediction(lab, AFFINE, TOTAL, TABLE, REF, "ts").prediction
    assert np.array_equal(got.array, want.array)


def test_real_totalsegmentator_labels_land_on_the_dicom_grid(real_ct_dir):
    """The shared TotalSegmentator file is LAS while the DICOM grid is LPS: organs must fall on the right HU."""
    from alqa_core.io.dicom import read_dicom_series

    ct = read_dicom_series(real_ct_dir / "series")
    ext = read_external_prediction(real_ct_dir / "totalsegmentator_v2_labels.nii.gz", TOTAL, TABLE, ct.grid, "ts")
    pred = ext.prediction
    assert pred.array.shape == (len(TABLE), *ct.shape)
    liver = pred.array[TABLE.channel_of("liver")] == 255
    aorta = pred.array[TABLE.channel_of("aorta")] == 255
    assert liver.sum() > 100_000 and aorta.sum() > 1_000
    assert 40 < ct.array[liver].mean() < 200  # enhanced liver parenchyma (a flipped map gives about -75 HU)
    assert ct.array[aorta].mean() > 120  # contrast-filled aorta
