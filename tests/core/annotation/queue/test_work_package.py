"""Work packages overlay the original CT exactly, name organs for Slicer and ITK-SNAP, and are immutable versions."""

from __future__ import annotations

import json

import nibabel as nib
import nrrd
import numpy as np
import slicerio

from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.annotation.queue.packages import case_packages, newest_package
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.io.hashing import file_sha256
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, Grid, LabelMap
from alqa_core.workspace import WorkspaceLayout

AFF = np.array([[-0.8, 0, 0, 100.0], [0, -0.8, 0, 50.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
SHAPE = (30, 20, 6)


def _inputs():
    ct = CTVolume(np.random.default_rng(0).normal(40, 10, SHAPE), AFF)
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:10, 5:10, 1:4] = T.value_of("liver")
    lab[20:25, 5:9, 2:5] = T.value_of("spleen")
    att = np.zeros((len(T),) + SHAPE, np.uint8)
    att[T.channel_of("liver"), 6:8, 6:8, 2] = 200
    return ct, lab, att


def test_work_package_files_geometry_and_names(tmp_path):
    ct, lab, att = _inputs()
    wp = write_work_package(tmp_path / "wp", "case_1", 2, ct, LabelMap(lab, AFF), att, ("liver", "spleen"), T)
    assert wp.folder.parent == tmp_path / "wp" and wp.package_id.startswith("r002-")
    for name in ("image.nii.gz", "pseudo_label.nii.gz", "attention.nii.gz", "preview.png", "task.json", "pseudo_label.seg.nrrd"):
        assert (wp.folder / name).exists(), name
    for name in ("image.nii.gz", "pseudo_label.nii.gz", "attention.nii.gz"):
        np.testing.assert_allclose(nib.load(wp.folder / name).affine, AFF, atol=1e-5)
    assert nib.load(wp.folder / "attention.nii.gz").get_fdata().max() == 200
    task = json.loads((wp.folder / "task.json").read_text())
    assert task["organs_to_fix"] == ["liver", "spleen"] and task["round"] == 2 and task["package_id"] == wp.package_id
    assert task["pseudo_label_sha256"] == file_sha256(wp.folder / "pseudo_label.nii.gz")
    assert f"--package {wp.package_id}" in task["how_to_submit"]["revision"]
    # the .seg.nrrd as 3D Slicer's own reader (slicerio) and pynrrd see it
    seg = slicerio.read_segmentation(str(wp.folder / "pseudo_label.seg.nrrd"))
    names = {s["name"]: s["labelValue"] for s in seg["segments"]}
    assert names == {o.name: o.value for o in T.organs}  # every organ has a named segment, empty ones too
    np.testing.assert_allclose(seg["ijkToLPS"], np.diag([-1, -1, 1, 1]) @ AFF, atol=1e-6)  # LPS of the same grid
    voxels, header = nrrd.read(str(wp.folder / "pseudo_label.seg.nrrd"))
    np.testing.assert_array_equal(voxels, lab)
    assert header["space"] == "left-posterior-superior"
    # and alqa reads it back by segment name onto the CT's grid
    back = read_submitted_label(wp.folder / "pseudo_label.seg.nrrd", T, reference=Grid(SHAPE, AFF))
    np.testing.assert_array_equal(back.array, lab)
    assert '"liver"' in (wp.folder / "pseudo_label.itksnap.txt").read_text()


def test_packages_are_immutable_versions(tmp_path):
    ct, lab, att = _inputs()
    layout = WorkspaceLayout(tmp_path)
    first = write_work_package(layout.work_packages("c1"), "c1", 0, ct, LabelMap(lab, AFF), att, ("liver",), T)
    stamp = (first.folder / "pseudo_label.nii.gz").stat().st_mtime_ns
    again = write_work_package(layout.work_packages("c1"), "c1", 0, ct, LabelMap(lab, AFF), att, ("liver",), T)
    assert again.package_id == first.package_id and (first.folder / "pseudo_label.nii.gz").stat().st_mtime_ns == stamp
    changed = lab.copy()
    changed[5:10, 5:10, 4] = T.value_of("liver")  # a new queue with another pseudo label: a new version beside it
    second = write_work_package(layout.work_packages("c1"), "c1", 1, ct, LabelMap(changed, AFF), att, ("liver",), T)
    assert second.package_id != first.package_id and second.package_id.startswith("r001-")
    np.testing.assert_array_equal(nib.load(first.folder / "pseudo_label.nii.gz").get_fdata(), lab)  # untouched
    assert [p.package_id for p in case_packages(layout, "c1")] == [first.package_id, second.package_id]
    assert newest_package(layout, "c1").package_id == second.package_id
    assert not [p for p in layout.work_packages("c1").iterdir() if p.name.startswith(".")]  # no half-written folder left
