"""Bad scans at ingest, through the path the ingest assets take.

``read_dataset`` -> ``ingest_scan`` (raw_scans) -> ``ingest_label`` (original_labels)
-> ``preprocess_scan`` (preprocessed_volumes). Each bad kind must raise
:class:`AlqaInputError` naming the offending file (or series folder) and the
reason, leave the user's dataset byte-identical, and leave no output file of
that case in the workspace (nothing half-written is visible).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from alqa_core.config.sections import PreprocessConfig
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.cases import ingest_label, ingest_scan, preprocess_scan
from alqa_core.ingest.dataset import read_dataset
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.workspace import WorkspaceLayout

from .conftest import AFFINE, OTHER_AFFINE, make_dataset, phantom_ct, phantom_label, tree_hashes

PRE = PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0))


def ingest_dataset(root: Path, layout: WorkspaceLayout) -> list[str]:
    """Every case of the dataset through the three ingest assets' core calls; returns the case ids."""
    ds = read_dataset(root, T)
    for case in ds.cases:
        s = ingest_scan(case, layout.raw_scan(case.case_id))
        ingest_label(case, ds, T, s.path, layout.original_label(case.case_id))
        preprocess_scan(s.path, layout.preprocessed(case.case_id), layout.grid_record(case.case_id), PRE)
    return [c.case_id for c in ds.cases]


def _image(root: Path, case: str) -> Path:
    return root / "imagesTr" / f"{case}_0000.nii.gz"


def _label(root: Path, case: str) -> Path:
    return root / "labelsTr" / f"{case}.nii.gz"


# Each maker damages a fresh two-case dataset and returns (the file/folder the error must name, the reason).
def _wrong_shape(root):
    p = _image(root, "c2")
    write_nifti(p, np.stack([phantom_ct(1), phantom_ct(2)], axis=-1), OTHER_AFFINE)  # two channels in one file
    return p, "expected a 3D volume"


def _wrong_affine(root):
    p = _image(root, "c2")
    singular = np.array(AFFINE)
    singular[:3, 2] = 0.0  # the slice axis has no direction
    img = nib.Nifti1Image(phantom_ct(1).astype(np.int16), None)
    img.set_sform(singular, code=1)
    img.set_qform(None, code=0)
    p.unlink()
    nib.save(img, str(p))
    return p, "invalid affine"


def _float_labels(root):
    p = _label(root, "c1")
    write_nifti(p, phantom_label().astype(np.float32) * 0.5, AFFINE)
    return p, "non-integer"


def _empty_file(root):
    p = _image(root, "c2")
    p.write_bytes(b"")
    return p, "file is empty"


def _truncated_gzip(root):
    p = _image(root, "c2")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return p, "truncated"


def _nan(root):
    p = _image(root, "c2")
    hu = phantom_ct(1)
    hu[5, 5, 5] = np.nan
    write_nifti(p, hu, OTHER_AFFINE)
    return p, "NaN"


def _not_nifti(root):
    p = _image(root, "c2")
    p.write_bytes(gzip.compress(b"P5\n24 20\n255\n" + bytes(480)))  # a gzipped PGM under a NIfTI name
    return p, "not a NIfTI image"


def _path_traversal(root):
    p = root / "imagesTr" / "c3..%2F..%2Fws_0000.nii.gz"
    shutil.copyfile(_image(root, "c1"), p)
    return p, "invalid case id"


def _label_for_unknown_case(root):
    p = _label(root, "c9")
    shutil.copyfile(_label(root, "c1"), p)
    return p, "label file without an image"


def _prediction_for_unknown_case(root):
    p = root / "predictions" / "totalseg" / "c9.nii.gz"
    p.parent.mkdir(parents=True)
    shutil.copyfile(_label(root, "c1"), p)
    return p, "which the dataset does not have"


def _label_for_the_wrong_case(root):
    p = _label(root, "c1")
    write_nifti(p, phantom_label(), OTHER_AFFINE)  # c2's grid
    return p, "not on the grid of image"


def _label_wrong_shape(root):
    p = _label(root, "c1")
    write_nifti(p, np.zeros((24, 20, 11), np.uint8), AFFINE)
    return p, "not on the grid of image"


BAD_NIFTI = {
    "wrong_shape": _wrong_shape,
    "wrong_affine": _wrong_affine,
    "float_labels": _float_labels,
    "empty_file": _empty_file,
    "truncated_gzip": _truncated_gzip,
    "nan": _nan,
    "not_nifti": _not_nifti,
    "case_id_path_traversal": _path_traversal,
    "label_for_a_case_unknown_to_the_dataset": _label_for_unknown_case,
    "prediction_for_a_case_unknown_to_the_dataset": _prediction_for_unknown_case,
    "label_for_the_wrong_case": _label_for_the_wrong_case,
    "label_wrong_shape": _label_wrong_shape,
}


def _assert_refused(root: Path, layout: WorkspaceLayout, where: Path, reason: str, figures):
    before = tree_hashes(root)
    figures.add("bad_inputs_tried")
    with pytest.raises(AlqaInputError) as err:
        ingest_dataset(root, layout)
    message = str(err.value)
    assert reason in message, message
    assert str(where) in message, message  # names the file (or the series folder)
    assert tree_hashes(root) == before, "ingest modified the user's dataset"
    written = [p for p in layout.root.rglob("*") if p.is_file()] if layout.root.exists() else []
    assert not [p for p in written if p.name.startswith(".tmp-")], written  # no half-written temp left
    figures.add("bad_inputs_rejected")
    return written


@pytest.mark.parametrize("kind", list(BAD_NIFTI))
def test_bad_nifti_scan_or_label_is_refused_at_ingest(tmp_path, figures, kind):
    root = make_dataset(tmp_path / "Dataset001_Bad", cases=("c1", "c2"), labelled=("c1",))
    layout = WorkspaceLayout(tmp_path / "ws")
    where, reason = BAD_NIFTI[kind](root)
    written = _assert_refused(root, layout, where, reason, figures)
    # a broken c2 image must not leave a c2 output behind (c1 may have been ingested before it)
    assert not [p for p in written if "c2" in p.name], written


def test_the_undamaged_dataset_ingests(tmp_path):
    """The suite's control: the same builder and path succeed when nothing is damaged."""
    root = make_dataset(tmp_path / "Dataset001_Good", cases=("c1", "c2"), labelled=("c1",))
    layout = WorkspaceLayout(tmp_path / "ws")
    before = tree_hashes(root)
    assert ingest_dataset(root, layout) == ["c1", "c2"]
    assert layout.preprocessed("c2").exists() and layout.original_label("c1").exists()
    assert tree_hashes(root) == before


def test_label_values_the_dataset_does_not_name_are_refused(tmp_path, figures):
    root = make_dataset(tmp_path / "Dataset001_Bad", cases=("c1", "c2"), labelled=("c1",))
    p = _label(root, "c1")
    write_nifti(p, np.where(phantom_label() > 0, 42, 0).astype(np.uint8), AFFINE)  # 42: not in labels {0, 1, 5}
    _assert_refused(root, WorkspaceLayout(tmp_path / "ws"), p, "42", figures)


def test_a_dataset_declaring_a_preset_drops_the_classes_the_organ_table_lacks(tmp_path):
    """TotalSegmentator's ~100 classes: a declared preset names every value, so the other organs are dropped knowingly."""
    root = make_dataset(tmp_path / "Dataset001_Total", cases=("c1", "c2"), labelled=("c1",))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "spleen": 1, "liver": 5}, "alqa": {"class_map": "total"}}))
    lab = phantom_label()
    lab[2:4, 2:4, 2:4] = 42  # a TotalSegmentator class outside the organ table
    write_nifti(_label(root, "c1"), lab, AFFINE)
    assert ingest_dataset(root, WorkspaceLayout(tmp_path / "ws")) == ["c1", "c2"]


# --------------------------------------------------------------------------
# DICOM: copies of the real JPEG 2000 series, damaged
# --------------------------------------------------------------------------


@pytest.fixture
def dicom_dataset(real_ct_dir, tmp_path) -> Path:
    """A dataset whose one case is the real series as a DICOM folder ``imagesTr/realct/``."""
    root = tmp_path / "Dataset002_Dicom"
    (root / "imagesTr").mkdir(parents=True)
    meta = {"labels": {"background": 0, "liver": 5}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    shutil.copytree(real_ct_dir / "series", root / "imagesTr" / "realct")
    return root


def _slices(root: Path) -> list[Path]:
    return sorted((root / "imagesTr" / "realct").iterdir())


def _dicom_missing_slices(root):
    _slices(root)[10].unlink()
    return root / "imagesTr" / "realct", "missing slices"


def _dicom_mixed_series(root):
    for p in _slices(root)[:5]:  # five slices re-labelled as another series (a second acquisition)
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99"
        ds.save_as(p)
    return root / "imagesTr" / "realct", "mixed series"


def _dicom_truncated_slice(root):
    p = _slices(root)[7]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return p, "truncated"


def _dicom_foreign_file(root):
    p = root / "imagesTr" / "realct" / "README.txt"
    p.write_text("exported by the PACS\n")
    return root / "imagesTr" / "realct", "not DICOM"


BAD_DICOM = {
    "missing_slices": _dicom_missing_slices,
    "mixed_series": _dicom_mixed_series,
    "truncated_slice": _dicom_truncated_slice,
    "non_dicom_file_in_series": _dicom_foreign_file,
}


@pytest.mark.parametrize("kind", list(BAD_DICOM))
def test_bad_dicom_series_is_refused_at_ingest(tmp_path, dicom_dataset, figures, kind):
    layout = WorkspaceLayout(tmp_path / "ws")
    where, reason = BAD_DICOM[kind](dicom_dataset)
    written = _assert_refused(dicom_dataset, layout, where, reason, figures)
    assert written == []
