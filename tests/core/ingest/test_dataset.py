"""nnU-Net v2 raw dataset reader: real tiny NIfTI datasets built in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from alqa_core.ensemble.external import ExternalPrediction, read_external_prediction
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.case_files import load_case_image, load_case_label, load_case_label_report
from alqa_core.ingest.dataset import read_dataset, read_datasets, read_prediction_folder
from alqa_core.organs import DEFAULT_ORGAN_TABLE, class_map_from_labels, class_map_preset
from alqa_core.volume import Grid
from alqa_core.workspace import validate_case_id

SHAPE = (6, 5, 4)
AFFINE = np.array([[1.5, 0, 0, -4.0], [0, 1.5, 0, 2.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
T = DEFAULT_ORGAN_TABLE
REF = Grid(SHAPE, AFFINE)


def save(path: Path, array, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def ct_array(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE).astype(np.int16)


def make_dataset(root: Path, labels: dict, train=(), test=(), label_arrays=None, alqa=None, **meta) -> Path:
    """Write dataset.json, images for ``train``/``test`` case ids and labelsTr from ``label_arrays``."""
    root.mkdir(parents=True, exist_ok=True)
    content = {"labels": labels, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": len(train)}
    if alqa is not None:
        content["alqa"] = alqa
    content.update(meta)
    (root / "dataset.json").write_text(json.dumps(content))
    for i, case in enumerate(train):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", ct_array(i))
    for i, case in enumerate(test):
        save(root / "imagesTs" / f"{case}_0000.nii.gz", ct_array(100 + i))
    for case, array in (label_arrays or {}).items():
        save(root / "labelsTr" / f"{case}.nii.gz", np.asarray(array, dtype=np.uint8))
    return root


def label_array(values) -> np.ndarray:
    """One voxel per value along the first row, the rest background."""
    arr = np.zeros(SHAPE, np.uint8)
    for n, v in enumerate(values):
        arr[n, 0, 0] = v
    return arr


def external(record, reference: Grid = REF) -> ExternalPrediction:
    """A dataset's prediction record converted the one way alqa converts members."""
    return read_external_prediction(record.path, record.class_map, T, reference, record.member)


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


# --------------------------------------------------------------------------
# case ids
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["liver_001", "A-b_9", "x" * 64])
def test_valid_case_ids(case_id):
    assert validate_case_id(case_id, "p") == case_id


@pytest.mark.parametrize("case_id", ["", "x" * 65, "../etc", "a/b", "a.b", "a b", "caf\u00e9", "..", 12])
def test_invalid_case_ids(case_id):
    with pytest.raises(AlqaInputError, match="invalid case id") as err:
        validate_case_id(case_id, "/data/x")
    assert err.value.path == "/data/x"


# --------------------------------------------------------------------------
# reading datasets
# --------------------------------------------------------------------------


def test_partial_labels_from_dataset_json(tmp_path):
    # values 1/2 are this dataset's own numbering; 3 is not named in labels
    root = make_dataset(
        tmp_path / "Dataset001_Liv",
        {"background": 0, "Liver": 1, "spleen": 2},
        train=["c1", "c2"],
        test=["t1"],
        label_arrays={"c1": label_array([1, 1, 2, 3])},
    )
    ds = read_dataset(root)
    assert ds.name == "Dataset001_Liv" and ds.file_ending == ".nii.gz"
    assert ds.annotated_organs == ("spleen", "liver")  # table order
    assert ds.case_ids == ("c1", "c2", "t1")
    c1, c2, t1 = ds.cases
    assert (c1.split, c1.image_format, c1.label_path) == ("train", "nifti", root / "labelsTr" / "c1.nii.gz")
    assert c1.annotated_organs == ("spleen", "liver")
    assert c2.label_path is None and c2.annotated_organs == ()
    assert t1.split == "test" and t1.image_path == root / "imagesTs" / "t1_0000.nii.gz"

    report = load_case_label_report(c1, ds.class_map)
    assert report.unmapped_voxels == 1 and report.unmapped_values == (3,)
    assert not report.reoriented
    np.testing.assert_array_equal(report.label.array[:4, 0, 0], [T.value_of("liver"), T.value_of("liver"), T.value_of("spleen"), 0])
    assert report.label.grid.matches(Grid(SHAPE, AFFINE))
    assert load_case_label(c2, ds.class_map) is None

    image = load_case_image(c1)
    np.testing.assert_array_equal(image.array, ct_array(0).astype(np.float32))


def test_preset_class_map_and_synonyms(tmp_path):
    # AbdomenAtlas numbering, names as in that release; this dataset annotates liver and postcava only
    root = make_dataset(
        tmp_path / "atlas",
        {"background": 0, "liver": 5, "postcava": 7},
        train=["a1"],
        label_arrays={"a1": label_array([5, 7, 8])},  # 8 = spleen in the preset, not annotated here
        alqa={"class_map": "AbdomenAtlas"},
    )
    ds = read_dataset(root)
    assert ds.class_map.name == "abdomenatlas_1.0"
    assert ds.annotated_organs == ("liver", "inferior_vena_cava")
    report = load_case_label_report(ds.cases[0], ds.class_map)
    np.testing.assert_array_equal(report.label.array[:3, 0, 0], [5, 8, 0])
    assert report.unmapped_values == (8,)


def test_labels_disagreeing_with_preset(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"], alqa={"class_map": "total"})
    with pytest.raises(AlqaInputError, match="'total' says 1 is 'spleen'") as err:
        read_dataset(root)
    assert err.value.path == str(root / "dataset.json")


def test_unknown_label_names_are_reported_not_fatal(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1, "liver_tumor": 2}, train=["a"])
    ds = read_dataset(root)
    assert ds.annotated_organs == ("liver",)
    assert ds.unknown_label_names == ("liver_tumor",)


def test_unlabeled_dataset(tmp_path):
    root = make_dataset(tmp_path / "raw", {"background": 0}, train=["u1"], test=["u2"])
    ds = read_dataset(root)
    assert ds.annotated_organs == ()
    assert all(c.label_path is None and c.annotated_organs == () for c in ds.cases)
    assert ds.predictions == ()


def test_dicom_case_with_labels_from_a_standard_converter(real_ct_dir, tmp_path):
    root = make_dataset(
        tmp_path / "real",
        {"background": 0, "spleen": 1, "liver": 5, "aorta": 52},
        alqa={"class_map": "total"},
    )
    shutil.copytree(real_ct_dir / "series", root / "imagesTr" / "realct")
    (root / "labelsTr").mkdir()
    shutil.copy(real_ct_dir / "totalsegmentator_v2_labels.nii.gz", root / "labelsTr" / "realct.nii.gz")
    before = listing(root)

    ds = read_dataset(root)
    (case,) = ds.cases
    assert (case.case_id, case.image_format) == ("realct", "dicom")
    image = load_case_image(case)
    assert image.shape == (512, 512, 20)
    # TotalSegmentator's file is LAS (rows flipped); the reader brings it onto the DICOM grid
    report = load_case_label_report(case, ds.class_map, reference=image.grid)
    assert report.reoriented
    assert report.label.grid.matches(image.grid)
    liver_hu = float(image.array[report.label.array == T.value_of("liver")].mean())
    assert 40.0 < liver_hu < 200.0
    assert report.unmapped_voxels > 0  # kidneys, stomach, bones...: not annotated by this dataset.json
    assert not np.any(report.label.array == T.value_of("stomach"))
    # without a reference the grid comes from the DICOM headers
    assert load_case_label(case, ds.class_map).grid.matches(image.grid)
    assert listing(root) == before


# --------------------------------------------------------------------------
# external predictions
# --------------------------------------------------------------------------


def test_external_label_map_prediction_with_member_json(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"])
    pred = label_array([5, 1, 52, 63, 99])  # TotalSegmentator v2 numbering
    save(root / "predictions" / "totalseg" / "a.nii.gz", pred)
    (root / "predictions" / "totalseg" / "member.json").write_text(json.dumps({"class_map": "total"}))
    ds = read_dataset(root)
    (record,) = ds.predictions
    assert (record.member, record.case_id, record.class_map.name) == ("totalseg", "a", "total")
    ext = external(record)
    soft = ext.prediction
    assert soft.organs == T.names and ext.member == "totalseg"
    assert {"liver", "spleen", "aorta", "inferior_vena_cava"} <= set(ext.covered_organs)
    assert soft.array.dtype == np.uint8 and set(np.unique(soft.array)) == {0, 255}
    for n, organ in enumerate(["liver", "spleen", "aorta", "inferior_vena_cava"]):
        assert soft.array[T.channel_of(organ), n, 0, 0] == 255
        assert soft.array[:, n, 0, 0].sum() == 255  # exactly one organ on
    assert soft.array[:, 4, 0, 0].sum() == 0  # 99 is not an organ of the table


def test_external_probability_maps(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a", "b"])
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=SHAPE).astype(np.float32)  # (i, j, k, 3): background, liver, spleen
    save(root / "predictions" / "nnunet" / "a.nii.gz", probs)
    as_uint8 = np.rint(probs * 255).astype(np.uint8)
    save(root / "predictions" / "nnunet" / "b.nii.gz", as_uint8)
    members = {"nnunet": class_map_from_labels("nnunet_liver_spleen", {"background": 0, "liver": 1, "spleen": 2})}
    ds = read_dataset(root, members=members)
    a, b = ds.predictions
    ext_a = external(a)
    assert ext_a.covered_organs == ("spleen", "liver")
    assert "kidney_left" in ext_a.missing_organs
    soft_a = ext_a.prediction
    np.testing.assert_array_equal(soft_a.array[T.channel_of("spleen")], as_uint8[..., 2])
    np.testing.assert_array_equal(soft_a.array[T.channel_of("liver")], as_uint8[..., 1])
    assert not soft_a.array[~ext_a.coverage_mask].any()  # uncovered organs are 0, flagged by coverage
    np.testing.assert_array_equal(external(b).prediction.array, soft_a.array)


def test_prediction_defaults_to_dataset_class_map_and_is_brought_onto_the_grid(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1, "spleen": 2}, train=["a"])
    pred = label_array([1, 2])
    # the same voxels written with the first two axes flipped (as a converter writing LAS might)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [(SHAPE[0] - 1), (SHAPE[1] - 1), 0]
    save(root / "predictions" / "m1" / "a.nii.gz", pred[::-1, ::-1], AFFINE @ flip)
    ds = read_dataset(root)
    (record,) = ds.predictions
    assert record.class_map is ds.class_map
    ext = external(record)
    assert ext.prediction.grid.matches(REF)
    assert ext.covered_organs == ("spleen", "liver")
    assert ext.prediction.array[T.channel_of("liver"), 0, 0, 0] == 255
    assert ext.prediction.array[T.channel_of("spleen"), 1, 0, 0] == 255


def test_prediction_errors(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"])
    folder = root / "predictions" / "m"
    path = save(folder / "a.nii.gz", label_array([1]), AFFINE + np.diag([0, 0, 0.5, 0]))
    (record,) = read_dataset(root).predictions
    with pytest.raises(AlqaInputError, match="mis-registered") as err:
        external(record)
    assert err.value.path == str(path)
    save(folder / "a.nii.gz", np.full(SHAPE + (2,), 1.2, np.float32))
    with pytest.raises(AlqaInputError, match=r"\[0, 1\]"):
        external(record)
    nan = np.full(SHAPE + (2,), 0.5, np.float32)
    nan[1, 1, 1, 1] = np.nan
    save(folder / "a.nii.gz", nan)
    with pytest.raises(AlqaInputError, match="NaN") as err:
        external(record)
    assert err.value.path == str(path)
    # a 2-channel file read with the full TotalSegmentator map covers only channel 1 (spleen)
    save(folder / "a.nii.gz", np.full(SHAPE + (2,), 0.5, np.float32))
    wide = external(record.__class__("m", "a", path, class_map_preset("total")))
    assert wide.covered_organs == ("spleen",)
    assert "liver" in wide.missing_organs
    save(folder / "ghost.nii.gz", label_array([1]))
    with pytest.raises(AlqaInputError, match="does not have") as err:
        read_dataset(root)
    assert err.value.path == str(folder / "ghost.nii.gz")
    (folder / "ghost.nii.gz").unlink()
    (folder / "member.json").write_text(json.dumps({"class_map": "nope"}))
    with pytest.raises(AlqaInputError, match="unknown class-map preset"):
        read_dataset(root)


def test_prediction_folder_outside_the_dataset(tmp_path):
    outside = tmp_path / "ts_out"
    save(outside / "x1.nii.gz", label_array([5]))
    save(outside / "x2.nii", label_array([1]))
    records = read_prediction_folder(outside, "totalseg", class_map_preset("total"))
    assert [(r.case_id, r.path.name) for r in records] == [("x1", "x1.nii.gz"), ("x2", "x2.nii")]
    assert external(records[0]).prediction.array[T.channel_of("liver"), 0, 0, 0] == 255
    with pytest.raises(AlqaInputError, match="does not have"):
        read_prediction_folder(outside, "totalseg", class_map_preset("total"), case_ids=["x1"])
    with pytest.raises(AlqaInputError, match="does not exist"):
        read_prediction_folder(tmp_path / "nowhere", "m", class_map_preset("total"))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_missing_and_bad_dataset_json(tmp_path):
    with pytest.raises(AlqaInputError, match="does not exist"):
        read_dataset(tmp_path / "none")
    (tmp_path / "d").mkdir()
    with pytest.raises(AlqaInputError, match="missing dataset.json"):
        read_dataset(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text('{"labels": {"background": 0,}')
    with pytest.raises(AlqaInputError, match="bad JSON at line 1") as err:
        read_dataset(tmp_path / "d")
    assert err.value.path == str(tmp_path / "d" / "dataset.json")
    (tmp_path / "d" / "dataset.json").write_text("[1, 2]")
    with pytest.raises(AlqaInputError, match="JSON object"):
        read_dataset(tmp_path / "d")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"file_ending": None}, r"missing required key\(s\) \['file_ending'\]"),
        ({"channel_names": {"0": "MRI"}}, "channel_names"),
        ({"channel_names": {"0": "CT", "1": "CT"}}, "one CT channel"),
        ({"file_ending": ".nrrd"}, "not supported"),
        ({"labels": {"background": 0, "liver": [1, 2]}}, "region-based"),
        ({"labels": {"liver": 1}}, "background"),
        ({"labels": {"background": 0, "liver": 1, "spleen": 1}}, "one value to several names"),
        ({"labels": {"background": 0, "liver": "1"}}, "non-negative integer"),
        ({"alqa": {"class_map": "no_such_preset"}}, "unknown class-map preset"),
        ({"alqa": "total"}, '"alqa" block'),
    ],
)
def test_dataset_json_errors(tmp_path, change, message):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"])
    meta = json.loads((root / "dataset.json").read_text())
    for key, value in change.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(AlqaInputError, match=message) as err:
        read_dataset(root)
    assert err.value.path == str(root / "dataset.json")


def test_layout_errors(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"])
    orphan = save(root / "labelsTr" / "b.nii.gz", label_array([1]))
    with pytest.raises(AlqaInputError, match="label file without an image") as err:
        read_dataset(root)
    assert err.value.path == str(orphan)
    orphan.unlink()

    second = save(root / "imagesTr" / "a_0001.nii.gz", ct_array())
    with pytest.raises(AlqaInputError, match="_0000.nii.gz") as err:
        read_dataset(root)
    assert err.value.path == str(second)
    second.unlink()

    notes = root / "imagesTr" / "notes.txt"
    notes.write_text("x")
    with pytest.raises(AlqaInputError, match="image file names"):
        read_dataset(root)
    notes.unlink()

    bad = save(root / "imagesTr" / "bad.id_0000.nii.gz", ct_array())
    with pytest.raises(AlqaInputError, match="invalid case id 'bad.id'") as err:
        read_dataset(root)
    assert err.value.path == str(bad)
    bad.unlink()

    save(root / "imagesTs" / "a_0000.nii.gz", ct_array())
    with pytest.raises(AlqaInputError, match="appears twice"):
        read_dataset(root)


def test_no_image_folders(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0})
    with pytest.raises(AlqaInputError, match="no imagesTr or imagesTs"):
        read_dataset(root)


def test_label_on_another_grid_names_both_files(tmp_path):
    root = make_dataset(tmp_path / "d", {"background": 0, "liver": 1}, train=["a"])
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.75
    save(root / "labelsTr" / "a.nii.gz", label_array([1]).astype(np.uint8), shifted)
    (case,) = read_dataset(root).cases
    with pytest.raises(AlqaInputError, match="mis-registered") as err:
        load_case_label(case, class_map_from_labels("d", {"liver": 1}))
    assert err.value.path == str(root / "labelsTr" / "a.nii.gz")
    assert str(root / "imagesTr" / "a_0000.nii.gz") in err.value.reason


def test_duplicate_case_ids_across_datasets(tmp_path):
    one = make_dataset(tmp_path / "one", {"background": 0, "liver": 1}, train=["a", "b"])
    two = make_dataset(tmp_path / "two", {"background": 0}, test=["c"])
    assert [d.case_ids for d in read_datasets([one, two])] == [("a", "b"), ("c",)]
    three = make_dataset(tmp_path / "three", {"background": 0}, test=["b"])
    with pytest.raises(AlqaInputError, match="'b' is also in dataset") as err:
        read_datasets([one, two, three])
    assert err.value.path == str(three)


def test_reader_never_writes_into_the_dataset(tmp_path):
    root = make_dataset(
        tmp_path / "d",
        {"background": 0, "liver": 1, "spleen": 2},
        train=["a", "b"],
        test=["t"],
        label_arrays={"a": label_array([1, 2])},
    )
    save(root / "predictions" / "m" / "a.nii.gz", label_array([2]))
    before = listing(root)
    os.chmod(root, 0o555)  # a write would also fail loudly
    try:
        ds = read_dataset(root)
        for case in ds.cases:
            load_case_image(case)
            load_case_label(case, ds.class_map)
        for record in ds.predictions:
            external(record)
        read_datasets([root])
    finally:
        os.chmod(root, 0o755)
    assert listing(root) == before
