"""Submitted label files are read by organ NAME: 3D Slicer .seg.nrrd segments, MONAI Label's label_info, NIfTI values."""

from __future__ import annotations

import numpy as np
import pytest
import slicerio

from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import Grid

AFF = np.array([[-1.5, 0, 0, 90.0], [0, -1.5, 0, 60.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])
SHAPE = (20, 16, 8)
LIVER, SPLEEN, GALL = T.value_of("liver"), T.value_of("spleen"), T.value_of("gallbladder")


def _masks():
    liver = np.zeros(SHAPE, bool)
    liver[2:9, 3:10, 1:6] = True
    spleen = np.zeros(SHAPE, bool)
    spleen[12:17, 4:9, 2:6] = True
    return liver, spleen


def _seg(path, segments, shape=SHAPE, affine=AFF):
    """A .seg.nrrd as 3D Slicer writes it (through slicerio): segments with names and Slicer's own label values."""
    seg = slicerio.create_segmentation(shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)
    for name, mask in segments:
        slicerio.add_segment(seg, mask, {"id": name, "name": name})
    slicerio.write_segmentation(str(path), seg)
    return path


def test_seg_nrrd_segments_map_to_organs_by_name_not_by_value(tmp_path):
    liver, spleen = _masks()
    # Slicer numbers segments 1, 2 in its own order: "Spleen" gets 1, "Liver" 2 -- never the organ table's values
    path = _seg(tmp_path / "rev.seg.nrrd", [("Spleen", spleen), ("Liver", liver)])
    label = read_submitted_label(path, T, reference=Grid(SHAPE, AFF))
    a = np.asarray(label.array)
    assert set(np.unique(a)) == {0, LIVER, SPLEEN}
    np.testing.assert_array_equal(a == LIVER, liver)
    np.testing.assert_array_equal(a == SPLEEN, spleen)
    np.testing.assert_allclose(label.affine, AFF, atol=1e-6)


def test_synonyms_and_an_unknown_segment_name(tmp_path):
    liver, spleen = _masks()
    ok = read_submitted_label(_seg(tmp_path / "a.seg.nrrd", [("gall_bladder", liver)]), T)
    assert set(np.unique(np.asarray(ok.array))) == {0, GALL}  # AbdomenAtlas's name for the gallbladder
    path = _seg(tmp_path / "b.seg.nrrd", [("liver", liver), ("Tumor", spleen)])
    with pytest.raises(AlqaInputError, match="'Tumor' is not an organ") as err:
        read_submitted_label(path, T)
    assert str(path) in str(err.value)


def test_overlapping_segments_of_two_organs_are_refused(tmp_path):
    liver, spleen = _masks()
    both = liver.copy()
    both[12:17, 4:9, 2:6] = True  # "spleen" drawn over the liver's region too: Slicer puts it in a second layer
    path = _seg(tmp_path / "o.seg.nrrd", [("liver", liver), ("spleen", both)])
    with pytest.raises(AlqaInputError, match="overlaps another organ"):
        read_submitted_label(path, T)


def test_monai_label_info_names_the_values_of_a_nifti_or_nrrd(tmp_path):
    liver, spleen = _masks()
    values = np.zeros(SHAPE, np.uint8)
    values[liver], values[spleen] = 1, 2  # MONAI Label's Slicer module: 1..N in the order of label_names
    nii = write_nifti(tmp_path / "l.nii.gz", values, AFF)
    label = read_submitted_label(nii, T, segments={1: "liver", 2: "spleen"})
    np.testing.assert_array_equal(np.asarray(label.array) == LIVER, liver)
    seg = slicerio.create_segmentation(SHAPE, np.diag([-1.0, -1.0, 1.0, 1.0]) @ AFF)
    seg["voxels"] = values
    slicerio.write_segmentation(str(tmp_path / "l.nrrd"), seg)
    nrrd_label = read_submitted_label(tmp_path / "l.nrrd", T, segments={1: "liver", 2: "spleen"})
    np.testing.assert_array_equal(nrrd_label.array, label.array)
    with pytest.raises(AlqaInputError, match=r"label values \[2\] have voxels but no segment name"):
        read_submitted_label(nii, T, segments={1: "liver"})


def test_a_seg_nrrd_cropped_to_its_extent_is_placed_back_on_the_case_grid(tmp_path):
    liver, _ = _masks()
    crop = (slice(2, 9), slice(3, 10), slice(1, 6))
    origin = AFF @ np.array([2, 3, 1, 1.0])
    cropped_affine = AFF.copy()
    cropped_affine[:3, 3] = origin[:3]
    path = _seg(tmp_path / "c.seg.nrrd", [("liver", liver[crop])], shape=liver[crop].shape, affine=cropped_affine)
    label = read_submitted_label(path, T, reference=Grid(SHAPE, AFF))
    assert label.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(label.array) == LIVER, liver)
    # a NIfTI must lie on the grid itself: the same crop is left for the validation to refuse
    nii = write_nifti(tmp_path / "c.nii.gz", liver[crop].astype(np.uint8) * LIVER, cropped_affine)
    assert read_submitted_label(nii, T, reference=Grid(SHAPE, AFF)).shape != SHAPE


def test_not_a_label_file(tmp_path):
    png = tmp_path / "label.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(AlqaInputError, match="not a label file"):
        read_submitted_label(png, T)
