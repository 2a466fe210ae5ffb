"""A work package's attention regions: 26-connected components, each with its organ, volume and a centre inside it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from alqa_core.annotation.queue.regions import attention_regions, organ_regions, voxel_volume_ml
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T

AFF = np.array([[-2.0, 0, 0, 90.0], [0, -2.0, 0, 80.0], [0, 0, 3.0, -50.0], [0, 0, 0, 1.0]])  # LPS-like, as DICOM cases are
SHAPE = (40, 36, 20)


def _case():
    pseudo = np.zeros(SHAPE, np.uint8)
    pseudo[5:20, 5:20, 4:16] = T.value_of("liver")
    pseudo[25:35, 22:32, 5:12] = T.value_of("spleen")
    pseudo[25:30, 5:10, 5:9] = T.value_of("pancreas")
    att = np.zeros(SHAPE, np.uint8)
    # a shell around the liver's top: its centroid lies OUTSIDE the shell
    shell = ndimage.binary_dilation(pseudo == T.value_of("liver"), iterations=1) & ~ndimage.binary_erosion(pseudo == T.value_of("liver"), iterations=1)
    shell[:, :, :10] = False
    att[shell] = 180
    att[27:33, 24:30, 7:10] = 90  # in the spleen, 108 voxels
    att[26:29, 6:9, 6:8] = 40  # in the pancreas, 18 voxels
    att[0:2, 34:36, 0:2] = 255  # over background: no organ
    att[33:35, 33:35, 18:20] = 10  # spleen-free corner, background
    att[2, 2, 2] = 7  # one voxel, touching only itself diagonally with nothing
    return att, pseudo


def test_regions_follow_the_organs_to_fix_then_size_and_centres_lie_inside():
    att, pseudo = _case()
    regions = attention_regions(att, pseudo, AFF, T, ("pancreas", "liver"))
    labels, n = ndimage.label(att > 0, structure=np.ones((3, 3, 3)))
    assert len(regions) == n == 6
    assert [r.organ for r in regions[:3]] == ["pancreas", "liver", "spleen"]  # to fix in their order, then by size
    assert [r.to_fix for r in regions[:3]] == [True, True, False]
    rest = regions[3:]
    assert all(r.organ == "" for r in rest) and [r.voxels for r in rest] == sorted((r.voxels for r in rest), reverse=True)
    for r in regions:
        i, j, k = r.center_vox
        assert att[i, j, k] > 0, r  # the crosshair lands inside the region
        component = labels == labels[i, j, k]
        assert component.sum() == r.voxels and r.peak == int(att[component].max())
        assert r.volume_ml == pytest.approx(r.voxels * voxel_volume_ml(AFF), abs=1e-3)
        lo, hi = np.argwhere(component).min(axis=0), np.argwhere(component).max(axis=0)
        assert [list(b) for b in r.bbox_vox] == [[int(a), int(b)] for a, b in zip(lo, hi)]
        np.testing.assert_allclose(r.center_mm, (AFF @ np.array([i, j, k, 1.0]))[:3])
    assert regions[2].voxels == 108 and regions[2].volume_ml == pytest.approx(108 * 12 / 1000)
    shell = regions[1]
    centroid = np.argwhere(labels == labels[shell.center_vox]).mean(axis=0).round().astype(int)
    assert att[tuple(centroid)] == 0  # the case the nearest-voxel rule exists for


def test_no_attention_gives_no_region_and_grids_must_match():
    _, pseudo = _case()
    assert attention_regions(np.zeros(SHAPE, np.uint8), pseudo, AFF, T) == ()
    with pytest.raises(ValueError, match="one 3D grid"):
        attention_regions(np.zeros((4, 4, 4), np.uint8), pseudo, AFF, T)


def test_ties_between_organs_go_to_the_organ_to_fix():
    pseudo = np.zeros((10, 10, 10), np.uint8)
    pseudo[:5] = T.value_of("liver")
    pseudo[5:] = T.value_of("stomach")
    att = np.zeros_like(pseudo)
    att[4:6, 4:6, 4:6] = 1  # 4 liver voxels, 4 stomach voxels
    assert attention_regions(att, pseudo, np.eye(4), T)[0].organ == "liver"  # the table's order
    assert attention_regions(att, pseudo, np.eye(4), T, ("stomach",))[0].organ == "stomach"


def test_a_package_without_a_map_points_at_its_organs_to_fix():
    _, pseudo = _case()
    regions = organ_regions(pseudo, AFF, T, ("spleen", "gallbladder", "liver"))  # gallbladder: missed, nothing to point at
    assert [(r.organ, r.source, r.to_fix) for r in regions] == [("spleen", "organ", True), ("liver", "organ", True)]
    spleen = regions[0]
    assert spleen.voxels == int((pseudo == T.value_of("spleen")).sum()) and pseudo[spleen.center_vox] == T.value_of("spleen")
    assert spleen.bbox_vox == ((25, 34), (22, 31), (5, 11)) and spleen.as_dict()["source"] == "organ"
