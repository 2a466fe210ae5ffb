"""The real abdominal CT (20 JPEG 2000 slices) against its TotalSegmentator v2 labels.

These catch orientation bugs a synthetic series cannot: a flipped in-plane
axis moves the liver mask onto fat and air (mean HU about -75 instead of 89).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from alqa_core.io.dicom import read_dicom_series
from alqa_core.io.nifti import write_ct
from alqa_core.organs import DEFAULT_ORGAN_TABLE, class_map_preset, remap_labels
from alqa_core.volume import CTVolume

LABELS = "totalsegmentator_v2_labels.nii.gz"


@pytest.fixture(scope="module")
def ct(real_ct_dir) -> CTVolume:
    return read_dicom_series(real_ct_dir / "series")


@pytest.fixture(scope="module")
def canonical_pair(ct, real_ct_dir):
    """(CT image, organ-table label image), both reoriented to RAS+ by nibabel."""
    ct_img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(ct.array), ct.affine))
    lab_img = nib.as_closest_canonical(nib.load(str(real_ct_dir / LABELS)))
    remapped = remap_labels(np.asarray(lab_img.dataobj), class_map_preset("total"), DEFAULT_ORGAN_TABLE)
    return ct_img, nib.Nifti1Image(remapped.array, lab_img.affine)


def test_series_geometry(ct):
    assert ct.shape == (512, 512, 20)
    np.testing.assert_allclose(ct.spacing_mm, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    # air outside the body after the -1024 rescale intercept
    assert float(ct.array.min()) == pytest.approx(-1024.0)


def test_same_world_grid_as_labels(canonical_pair):
    ct_img, lab_img = canonical_pair
    assert ct_img.shape == lab_img.shape
    np.testing.assert_allclose(ct_img.affine, lab_img.affine, atol=1e-3)


def test_hu_inside_organs(canonical_pair):
    ct_img, lab_img = canonical_pair
    hu, lab = np.asarray(ct_img.dataobj), np.asarray(lab_img.dataobj)
    liver = float(hu[lab == DEFAULT_ORGAN_TABLE.value_of("liver")].mean())
    aorta = float(hu[lab == DEFAULT_ORGAN_TABLE.value_of("aorta")].mean())
    assert 40.0 < liver < 200.0, liver  # measured elsewhere: 89
    assert aorta > 100.0, aorta  # measured elsewhere: 177 (contrast)


def _centroid_ras(lab_img, value: int) -> np.ndarray:
    ijk = np.argwhere(np.asarray(lab_img.dataobj) == value).mean(axis=0)
    return (lab_img.affine @ np.append(ijk, 1.0))[:3]


def test_liver_is_on_the_patients_right_of_the_spleen(canonical_pair):
    # nibabel's RAS+: +x points to the subject's Right (parrec.py docs: "left to Right").
    _, lab_img = canonical_pair
    liver = _centroid_ras(lab_img, DEFAULT_ORGAN_TABLE.value_of("liver"))
    spleen = _centroid_ras(lab_img, DEFAULT_ORGAN_TABLE.value_of("spleen"))
    assert liver[0] > spleen[0] + 50.0, (liver, spleen)


def test_written_ct_carries_no_patient_data(ct, tmp_path):
    path = write_ct(tmp_path / "ct.nii.gz", ct)
    img = nib.load(str(path))
    header = img.header
    assert header["descrip"].item() == b"alqa"
    for field in ("db_name", "aux_file", "intent_name"):
        assert header[field].item() in (b"", b"None"), field
    assert len(header.extensions) == 0
    # strings of the source DICOM (institution address, station, device serial) appear nowhere in the header
    block = header.binaryblock
    for text in (b"Basel", b"Petersgraben", b"PETCT2", b"60064", b"SIEMENS"):
        assert text not in block
    np.testing.assert_allclose(img.affine, ct.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(ct.array).astype(np.int16))
