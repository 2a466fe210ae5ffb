"""Work packages overlay the original CT exactly and name organs for Slicer and ITK-SNAP."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np

from alqa_core.annotation.work_package import write_work_package
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap

AFF = np.array([[-0.8, 0, 0, 100.0], [0, -0.8, 0, 50.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def test_work_package_files_geometry_and_names(tmp_path):
    shape = (30, 20, 6)
    ct = CTVolume(np.random.default_rng(0).normal(40, 10, shape), AFF)
    lab = np.zeros(shape, np.uint8)
    lab[5:10, 5:10, 1:4] = T.value_of("liver")
    att = np.zeros((len(T),) + shape, np.uint8)
    att[T.channel_of("liver"), 6:8, 6:8, 2] = 200
    wp = write_work_package(tmp_path / "wp", "case_1", 2, ct, LabelMap(lab, AFF), att, ("liver", "spleen"), T)
    for name in ("image.nii.gz", "pseudo_label.nii.gz", "attention.nii.gz", "preview.png", "task.json", "pseudo_label.seg.nrrd"):
        assert (wp.folder / name).exists(), name
    for name in ("image.nii.gz", "pseudo_label.nii.gz", "attention.nii.gz"):
        np.testing.assert_allclose(nib.load(wp.folder / name).affine, AFF, atol=1e-5)
    assert nib.load(wp.folder / "attention.nii.gz").get_fdata().max() == 200
    task = json.loads((wp.folder / "task.json").read_text())
    assert task["organs_to_fix"] == ["liver", "spleen"] and task["round"] == 2
    assert "alqa submit case_1" in task["how_to_submit"]["revision"]
    raw = (wp.folder / "pseudo_label.seg.nrrd").read_bytes()
    header, data = raw.split(b"\n\n", 1)
    header = header.decode()
    assert "Segment4_Name:=liver" in header and "Segment4_LabelValue:=5" in header
    # LPS space: RAS x of -0.8 becomes +0.8 in the first space direction, origin x flips sign
    assert "space directions: (0.8,0,0) (0,0.8,0) (0,0,2.5)" in header
    assert "space origin: (-100,-50,-30)" in header
    vox = np.frombuffer(gzip.decompress(data), np.uint8).reshape(shape, order="F")
    np.testing.assert_array_equal(vox, lab)
    assert '"liver"' in (wp.folder / "pseudo_label.itksnap.txt").read_text()
