"""DICOM series reader: exact geometry on synthetic series, clear errors on bad ones.

Bad series are built in tmp_path from copies of the real JPEG 2000 slices
(modified with pydicom) or written from scratch, uncompressed.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from alqa_core.errors import AlqaInputError
from alqa_core.io.dicom import DicomSeriesInfo, list_dicom_series, read_dicom_grid, read_dicom_series

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def write_slice(
    path: Path,
    stored: np.ndarray,
    position,
    orientation=(1, 0, 0, 0, 1, 0),
    pixel_spacing=(0.5, 0.8),
    slope=1.0,
    intercept=-1024.0,
    series_uid="1.2.826.0.1.3680043.8.498.1",
    modality="CT",
) -> Path:
    """One uncompressed signed 16-bit slice with the given geometry."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
    ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_series(folder: Path, n_slices=5, rows=4, columns=3, positions=None, **kwargs) -> np.ndarray:
    """Write slices in scrambled file order; return stored values as (k, row, column) in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = (
        100 * np.arange(n_slices)[:, None, None] + 10 * np.arange(rows)[None, :, None] + np.arange(columns)[None, None, :]
    ).astype(np.int16) - 200
    if positions is None:
        positions = [(10.0, 20.0, 30.0 + 2.5 * k) for k in range(n_slices)]
    scramble = np.random.default_rng(0).permutation(n_slices)
    for name_index, k in enumerate(scramble):
        write_slice(folder / f"img{name_index:03d}.dcm", stored[k], positions[k], **kwargs)
    return stored


@pytest.fixture
def real_copy(real_ct_dir, tmp_path) -> Path:
    """A writable copy of the real 20-slice JPEG 2000 series."""
    dst = tmp_path / "series"
    shutil.copytree(real_ct_dir / "series", dst)
    return dst


def _files(folder: Path) -> list[Path]:
    """Slice files in position order (the real series' file names follow the z order)."""
    return sorted(folder.iterdir())


def _edit(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


# --------------------------------------------------------------------------
# exact geometry and HU
# --------------------------------------------------------------------------


def test_synthetic_axial_series_has_exact_affine_and_hu(tmp_path):
    stored = synthetic_series(tmp_path / "s", slope=2.0, intercept=-1000.0)
    vol = read_dicom_series(tmp_path / "s")
    # array is [i=column, j=row, k=slice], HU = 2 * stored - 1000, slices sorted by z
    expected = (2.0 * stored - 1000.0).transpose(2, 1, 0)
    assert vol.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.array, expected.astype(np.float32))
    # LPS: column step 0.8 mm along +x (L), row step 0.5 mm along +y (P), slices +2.5 mm in z.
    # RAS+ negates x and y.
    expected_affine = np.array(
        [[-0.8, 0, 0, -10.0], [0, -0.5, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]], dtype=np.float64
    )
    np.testing.assert_allclose(vol.affine, expected_affine, atol=1e-9)
    assert read_dicom_grid(tmp_path / "s").matches(vol.grid)


def test_slices_descending_in_z_are_sorted_by_position_not_file_order(tmp_path):
    positions = [(0.0, 0.0, -5.0 - 3.0 * k) for k in range(4)]  # stored order goes downwards
    stored = synthetic_series(tmp_path / "s", n_slices=4, positions=positions)
    vol = read_dicom_series(tmp_path / "s")
    assert vol.affine[2, 2] == pytest.approx(3.0)  # k grows towards superior
    assert vol.affine[2, 3] == pytest.approx(-14.0)  # k = 0 is the lowest slice
    # the lowest slice is stored[3]
    np.testing.assert_array_equal(vol.array[:, :, 0], (stored[3] - 1024.0).T)
    np.testing.assert_array_equal(vol.array[:, :, 3], (stored[0] - 1024.0).T)


def test_coronal_series_uses_cross_product_normal(tmp_path):
    # rows along +x (L), columns along -z (towards the feet): normal = row x col = +y (P)
    positions = [(-50.0, 7.0 + 3.0 * k, 100.0) for k in range(4)]
    synthetic_series(tmp_path / "s", n_slices=4, positions=positions, orientation=(1, 0, 0, 0, 0, -1))
    vol = read_dicom_series(tmp_path / "s")
    expected = np.array(
        [[-0.8, 0, 0, 50.0], [0, 0, -3.0, -7.0], [0, -0.5, 0, 100.0], [0, 0, 0, 1]], dtype=np.float64
    )
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)


# --------------------------------------------------------------------------
# bad input, from copies of the real series
# --------------------------------------------------------------------------


def test_missing_middle_slice(real_copy):
    files = _files(real_copy)
    files[10].unlink()
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert err.value.path == str(real_copy)
    assert "missing slices" in err.value.reason
    assert files[9].name in err.value.reason and files[11].name in err.value.reason


def test_inconsistent_pixel_spacing(real_copy):
    bad = _files(real_copy)[7]
    _edit(bad, PixelSpacing=[0.8, 0.8])
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert err.value.path == str(bad)
    assert "PixelSpacing" in err.value.reason


def test_mixed_series_listed_and_selectable(real_copy):
    files = _files(real_copy)
    for f in files[:5]:
        _edit(f, SeriesInstanceUID="1.2.3.4")
    for f in files[5:]:
        _edit(f, SeriesInstanceUID="1.2.3.5")
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert "mixed series" in err.value.reason
    assert "1.2.3.4 (5 files)" in err.value.reason and "1.2.3.5 (15 files)" in err.value.reason

    part = read_dicom_series(real_copy, series_uid="1.2.3.5")
    assert part.shape == (512, 512, 15)
    small = read_dicom_series(real_copy, series_uid="1.2.3.4")
    assert small.shape == (512, 512, 5)
    # the 5 files are the top of the stack (file names follow descending z): same x/y, higher z
    np.testing.assert_allclose(small.affine[:3, :3], part.affine[:3, :3])
    assert small.affine[2, 3] == pytest.approx(part.affine[2, 3] + 15 * 2.0)

    infos = list_dicom_series(real_copy)
    assert [(i.series_uid, i.n_slices) for i in infos] == [("1.2.3.4", 5), ("1.2.3.5", 15)]
    with pytest.raises(AlqaInputError, match="no series with SeriesInstanceUID"):
        read_dicom_series(real_copy, series_uid="9.9")


def test_non_dicom_file_is_named(real_copy):
    (real_copy / "notes.txt").write_text("not an image\n")
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert "not DICOM" in err.value.reason and "notes.txt" in err.value.reason


def test_undecodable_pixel_data_names_the_codec(real_copy):
    bad = _files(real_copy)[3]
    ds = pydicom.dcmread(bad)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # JPEG 2000 bytes labelled as JPEG-LS
    ds.save_as(bad)
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert err.value.path == str(bad)
    assert "cannot decode" in err.value.reason and "JPEG-LS" in err.value.reason


def test_truncated_file(real_copy):
    bad = _files(real_copy)[5]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.warns(UserWarning), pytest.raises(AlqaInputError) as err:
        read_dicom_series(real_copy)
    assert err.value.path == str(bad)


def test_single_slice(real_ct_dir, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(_files(real_ct_dir / "series")[0], folder)
    with pytest.raises(AlqaInputError, match="single slice"):
        read_dicom_series(folder)


def test_empty_missing_and_file_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlqaInputError, match="empty"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(AlqaInputError, match="does not exist"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "file.dcm").write_bytes(b"x")
    with pytest.raises(AlqaInputError, match="got a file"):
        read_dicom_series(tmp_path / "file.dcm")
    (tmp_path / "nested" / "inner").mkdir(parents=True)
    with pytest.raises(AlqaInputError, match="subfolders"):
        read_dicom_series(tmp_path / "nested")


# --------------------------------------------------------------------------
# bad input, synthetic
# --------------------------------------------------------------------------


def test_inconsistent_orientation(tmp_path):
    synthetic_series(tmp_path / "s", n_slices=3)
    bad = tmp_path / "s" / "img001.dcm"
    _edit(bad, ImageOrientationPatient=[0, 1, 0, 1, 0, 0])
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(tmp_path / "s")
    assert "ImageOrientationPatient" in err.value.reason


def test_inconsistent_rows_columns(tmp_path):
    synthetic_series(tmp_path / "s", n_slices=3)
    write_slice(tmp_path / "s" / "zzz.dcm", np.zeros((5, 3), np.int16), (10.0, 20.0, 37.5))
    with pytest.raises(AlqaInputError) as err:
        read_dicom_series(tmp_path / "s")
    assert "slice size" in err.value.reason and "zzz.dcm" in err.value.path


def test_uneven_slice_positions(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 6.6, 8.6, 10.6)]
    synthetic_series(tmp_path / "s", n_slices=6, positions=positions)
    with pytest.raises(AlqaInputError, match="inconsistent slice spacing"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_positions(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 2.0, 4.0)]
    synthetic_series(tmp_path / "s", n_slices=4, positions=positions)
    with pytest.raises(AlqaInputError, match="same position"):
        read_dicom_series(tmp_path / "s")


def test_missing_rescale_and_non_ct(tmp_path):
    synthetic_series(tmp_path / "s", n_slices=3)
    ds = pydicom.dcmread(tmp_path / "s" / "img000.dcm")
    del ds.RescaleIntercept
    ds.save_as(tmp_path / "s" / "img000.dcm")
    with pytest.raises(AlqaInputError, match="RescaleIntercept"):
        read_dicom_series(tmp_path / "s")
    synthetic_series(tmp_path / "mr", n_slices=3, modality="MR")
    with pytest.raises(AlqaInputError, match="not a CT series"):
        read_dicom_series(tmp_path / "mr")


def test_series_info_is_technical_only(real_ct_dir):
    (info,) = list_dicom_series(real_ct_dir / "series")
    assert (info.modality, info.n_slices, info.rows, info.columns) == ("CT", 20, 512, 512)
    assert info.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    names = {f.name for f in dataclasses.fields(DicomSeriesInfo)}
    assert not {n for n in names if any(w in n for w in ("patient", "birth", "date", "institution", "station", "physician", "accession"))}
