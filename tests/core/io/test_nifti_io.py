"""alqa_core.io.nifti: round trips on real files and clear errors on bad ones."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_ct, read_grid, read_label, read_nifti_array, read_soft_prediction, write_ct, write_label, write_nifti, write_soft_prediction
from alqa_core.volume import CTVolume, LabelMap, SoftPrediction

AFFINE = np.array([[-0.75, 0, 0, 12.5], [0, 0.75, 0, -40.25], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])


def _save(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def test_ct_round_trip_rounds_to_int16(tmp_path):
    hu = np.random.default_rng(1).uniform(-1100, 1500, size=(5, 4, 3)).astype(np.float32)
    path = write_ct(tmp_path / "ct.nii.gz", CTVolume(hu, AFFINE))
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.int16
    assert img.header["descrip"].item() == b"alqa"
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (1, 1)
    back = read_ct(path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, np.rint(hu))
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-5)


def test_ct_float_dtype_and_clipping(tmp_path):
    hu = np.array([[[-40000.5, 0.25], [40000.0, 7.75]]], dtype=np.float32)
    clipped = read_ct(write_ct(tmp_path / "c.nii.gz", CTVolume(hu, AFFINE)))
    np.testing.assert_array_equal(clipped.array.ravel(), [-32768, 0, 32767, 8])
    exact = read_ct(write_ct(tmp_path / "f.nii.gz", CTVolume(hu, AFFINE), dtype=np.float32))
    np.testing.assert_array_equal(exact.array, hu)


def test_label_round_trip_and_dtype_choice(tmp_path):
    small = np.zeros((4, 4, 2), dtype=np.int64)
    small[1, 2, 1] = 9
    back = read_label(write_label(tmp_path / "l.nii.gz", LabelMap(small, AFFINE)), class_map_name="total")
    assert back.array.dtype == np.uint8 and back.class_map_name == "total"
    np.testing.assert_array_equal(back.array, small)
    big = small.copy()
    big[0, 0, 0] = 300
    assert read_label(write_label(tmp_path / "b.nii.gz", LabelMap(big, AFFINE))).array.dtype == np.uint16


def test_label_from_float_file(tmp_path):
    integral = _save(tmp_path / "ok.nii.gz", np.array([[[0.0, 5.0], [52.0, 1.0]]], dtype=np.float32))
    np.testing.assert_array_equal(read_label(integral).array.ravel(), [0, 5, 52, 1])
    frac = _save(tmp_path / "frac.nii.gz", np.array([[[0.0, 0.5]]], dtype=np.float32))
    with pytest.raises(AlqaInputError, match="non-integer"):
        read_label(frac)
    nan = _save(tmp_path / "nan.nii.gz", np.array([[[0.0, np.nan]]], dtype=np.float32))
    with pytest.raises(AlqaInputError, match="NaN"):
        read_label(nan)
    neg = _save(tmp_path / "neg.nii.gz", np.array([[[0, -2]]], dtype=np.int16))
    with pytest.raises(AlqaInputError, match="negative"):
        read_label(neg)


def test_dimensions(tmp_path):
    four_one = _save(tmp_path / "41.nii.gz", np.ones((3, 2, 2, 1), dtype=np.int16))
    assert read_ct(four_one).shape == (3, 2, 2)
    four = _save(tmp_path / "4.nii.gz", np.ones((3, 2, 2, 2), dtype=np.int16))
    with pytest.raises(AlqaInputError, match="expected a 3D volume"):
        read_ct(four)
    two = _save(tmp_path / "2.nii.gz", np.ones((3, 2), dtype=np.int16))
    with pytest.raises(AlqaInputError, match="expected a 3D volume"):
        read_label(two)
    arr, aff = read_nifti_array(four)
    assert arr.shape == (3, 2, 2, 2)
    np.testing.assert_allclose(aff, AFFINE)


def test_ct_with_nan_is_rejected(tmp_path):
    data = np.zeros((2, 2, 2), np.float32)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    with pytest.raises(AlqaInputError, match="2 voxels are NaN"):
        read_ct(_save(tmp_path / "n.nii.gz", data))


def test_bad_files_name_path_and_reason(tmp_path):
    with pytest.raises(AlqaInputError, match="does not exist") as err:
        read_ct(tmp_path / "missing.nii.gz")
    assert err.value.path == str(tmp_path / "missing.nii.gz")
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(AlqaInputError, match="not a regular file"):
        read_ct(tmp_path / "dir.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(AlqaInputError, match="empty"):
        read_ct(tmp_path / "empty.nii.gz")
    (tmp_path / "text.nii.gz").write_bytes(b"hello, not gzip " * 40)
    with pytest.raises(AlqaInputError, match="not a NIfTI|corrupt"):
        read_ct(tmp_path / "text.nii.gz")
    mgh = tmp_path / "m.mgz"
    nib.save(nib.MGHImage(np.zeros((3, 3, 3), np.float32), np.eye(4)), str(mgh))
    with pytest.raises(AlqaInputError, match="MGHImage"):
        read_ct(mgh)


def test_truncated_voxel_data(tmp_path):
    good = _save(tmp_path / "g.nii.gz", np.zeros((8, 8, 8), np.int16))
    raw = gzip.decompress(good.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw[:600]))  # header intact, voxels missing
    with pytest.raises(AlqaInputError, match="truncated") as err:
        read_ct(cut)
    assert err.value.path == str(cut)


def test_singular_affine(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), np.eye(4))
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    with pytest.raises(AlqaInputError, match="invalid affine"):
        read_ct(tmp_path / "s.nii.gz")


def test_soft_prediction_round_trip(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, size=(3, 4, 5, 6), dtype=np.uint8)
    pred = SoftPrediction(arr, AFFINE, ("spleen", "liver", "aorta"), member="unet")
    path = write_soft_prediction(tmp_path / "p.nii.gz", pred)
    assert nib.load(str(path)).shape == (4, 5, 6, 3)  # channels last on disk
    back = read_soft_prediction(path, ("spleen", "liver", "aorta"), member="unet")
    np.testing.assert_array_equal(back.array, arr)
    assert back.organs == ("spleen", "liver", "aorta") and back.member == "unet"
    with pytest.raises(AlqaInputError, match="3 channels, expected 2"):
        read_soft_prediction(path, ("spleen", "liver"))
    floaty = _save(tmp_path / "f.nii.gz", np.zeros((2, 2, 2, 3), np.float32))
    with pytest.raises(AlqaInputError, match="uint8 4D"):
        read_soft_prediction(floaty, ("a", "b", "c"))


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "out" / "v.nii.gz"
    write_nifti(target, np.ones((2, 2, 2), np.int16), AFFINE)
    assert sorted(p.name for p in target.parent.iterdir()) == ["v.nii.gz"]  # no .tmp-* left behind
    np.testing.assert_array_equal(read_nifti_array(target)[0], np.ones((2, 2, 2)))
    # the final rename fails (a non-empty folder holds the name): the temporary file is removed
    blocked = tmp_path / "out" / "blocked.nii.gz"
    blocked.mkdir()
    (blocked / "keep.txt").write_text("user data")
    with pytest.raises(OSError):
        write_nifti(blocked, np.ones((2, 2, 2), np.int16), AFFINE)
    assert sorted(p.name for p in target.parent.iterdir()) == ["blocked.nii.gz", "v.nii.gz"]
    assert (blocked / "keep.txt").read_text() == "user data"


def test_read_grid_from_header(tmp_path):
    path = _save(tmp_path / "g.nii.gz", np.zeros((7, 6, 5), np.int16))
    grid = read_grid(path)
    assert grid.shape == (7, 6, 5)
    np.testing.assert_allclose(grid.affine, AFFINE)
    with pytest.raises(AlqaInputError, match="does not exist"):
        read_grid(tmp_path / "none.nii.gz")
