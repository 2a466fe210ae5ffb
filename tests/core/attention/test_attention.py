"""Attention maps (003 Eq. 1-4), cleaning in mm, attention size, on hand-built probability arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import entr

from alqa_core.attention import kernel
from alqa_core.attention.cleaning import clean_mask, clean_voxels, ellipsoid_structure, voxel_cube_structure
from alqa_core.attention.compute import attention_from_predictions, compute_attention
from alqa_core.attention.constants import entropy_lut
from alqa_core.config.sections import AttentionConfig
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_soft_prediction, write_soft_prediction
from alqa_core.volume import SoftPrediction

#: Eq. 1 or Eq. 2 alone: the other threshold is out of reach (std <= 0.5, entropy <= ln 2).
ONLY_STD = AttentionConfig(uncertainty_threshold=10.0, cleaning_radius_mm=0.0)
ONLY_ENTROPY = AttentionConfig(inconsistency_threshold=10.0, cleaning_radius_mm=0.0)
ONLY_OVERLAP = AttentionConfig(inconsistency_threshold=10.0, uncertainty_threshold=10.0, cleaning_radius_mm=0.0)


def _u8(p) -> np.ndarray:
    return np.clip(np.rint(np.asarray(p, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def _attention(block, organs=("a",), spacing=(1.0, 1.0, 1.0), **kw):
    return compute_attention(block, organs=list(organs), spacing_mm=spacing, **kw)


# --------------------------------------------------------------------------
# A straightforward dense transcription of Eq. 1-4 with the same cleaning
# (scipy on the whole volume), to check the vectorised version against.
# --------------------------------------------------------------------------


def transcription(block, spacing, cfg, one_hot=None, coverage=None, scored=None):
    m_count, c_count = block.shape[:2]
    one_hot = np.zeros(m_count, bool) if one_hot is None else np.asarray(one_hot, bool)
    coverage = np.ones((m_count, c_count), bool) if coverage is None else coverage
    scored = range(c_count) if scored is None else scored
    p = block / 255.0
    ent = entr(p) if cfg.entropy == "entr" else entr(p) + entr(1 - p)
    high = (p > 0.5) & coverage[:, :, None, None, None]
    st = ellipsoid_structure(cfg.cleaning_radius_mm, spacing)
    min_vox = cfg.min_component_ml * 1000 / np.prod(spacing)
    clean = lambda m: clean_mask(m, st, restore=cfg.cleaning_restore, min_component_voxels=min_vox)  # noqa: E731
    heat = np.zeros(block.shape[1:])
    organ_vox = np.zeros(c_count, int)
    for c in scored:
        members = np.flatnonzero(coverage[:, c])
        std = p[members, c].std(axis=0)
        unc = ent[members, c].mean(axis=0)
        overlap = np.zeros(block.shape[2:], bool)
        for m in members:
            overlap |= high[m, c] & (high[m].sum(0) - high[m, c] >= 1)
            if one_hot[m]:
                others = sum(high[k].sum(0) - high[k, c] for k in range(m_count) if k != m)
                overlap |= high[m, c] & (others >= 1)
        if cfg.clean_overlap:
            overlap = clean(overlap)
        h = std * clean(std > cfg.inconsistency_threshold) + unc * clean(unc > cfg.uncertainty_threshold) + overlap
        heat[c] = h / h.max() if h.max() > 0 else h
        organ_vox[c] = int((p[members, c].mean(0) > 0.5).sum())
    return heat, organ_vox


def _assert_matches_transcription(block, spacing, cfg, one_hot=None, coverage=None, annotated=(), backend="auto"):
    m_count, c_count = block.shape[:2]
    organs = [f"o{c}" for c in range(c_count)]
    member_organs = None if coverage is None else [[organs[c] for c in range(c_count) if coverage[m, c]] for m in range(m_count)]
    res = compute_attention(
        block, organs=organs, spacing_mm=spacing, one_hot=one_hot, member_organs=member_organs,
        annotated_organs=annotated, config=cfg, backend=backend,
    )
    cov = np.ones((m_count, c_count), bool) if coverage is None else coverage
    scored = [c for c in range(c_count) if cov[:, c].any() and organs[c] not in annotated]
    heat, organ_vox = transcription(block, spacing, cfg, one_hot, coverage, scored)
    expected = np.where(heat > 0, np.maximum(np.rint(heat * 255), 1), 0)
    assert np.array_equal(res.heatmap > 0, heat > 0)
    assert np.abs(res.heatmap.astype(int) - expected).max() <= 1
    voxel_ml = float(np.prod(spacing)) / 1000
    for c in range(c_count):
        size = res.size.organs[c]
        assert size.scored == (c in scored)
        assert size.attention_voxels == int((heat[c] > 0).sum())
        assert size.organ_ml == pytest.approx(organ_vox[c] * voxel_ml)
        assert size.weighted_ml == pytest.approx(heat[c].sum() * voxel_ml)
    return res


# --------------------------------------------------------------------------
# Eq. 1-3 by hand
# --------------------------------------------------------------------------


def test_inconsistency_is_population_std_across_members():
    p = np.zeros((3, 1, 4, 1, 1))
    p[:, 0, 0, 0, 0] = [1.0, 0.0, 0.0]  # std = sqrt(2/9) = 0.4714
    p[:, 0, 1, 0, 0] = [0.6, 0.4, 0.2]  # std = sqrt(((0.2)^2 + 0 + 0.2^2) / 3) = 0.1633
    p[:, 0, 2, 0, 0] = [0.5, 0.3, 0.4]  # std = 0.0816 < 0.1: off
    res = _attention(_u8(p), config=ONLY_STD)
    q = _u8(p) / 255.0  # the stored values are what is measured
    std = [math.sqrt(sum((x - sum(v) / 3) ** 2 for x in v) / 3) for v in q[:, 0, :, 0, 0].T]
    assert std[0] == pytest.approx(math.sqrt(2 / 9))
    h = res.heatmap[0, :, 0, 0]
    assert h[0] == 255
    assert h[1] == round(255 * std[1] / std[0])
    assert h[2] == 0 and h[3] == 0


def test_uncertainty_is_mean_binary_entropy_in_nats():
    p = np.zeros((3, 1, 4, 1, 1))
    p[:, 0, 0, 0, 0] = 0.5  # ln 2 each
    p[:, 0, 1, 0, 0] = [0.2, 0.2, 0.0]
    p[:, 0, 2, 0, 0] = [0.01, 0.0, 0.0]  # mean entropy ~0.019 < 0.05: off
    res = _attention(_u8(p), config=ONLY_ENTROPY)
    H = lambda x: 0.0 if x in (0.0, 1.0) else -(x * math.log(x) + (1 - x) * math.log(1 - x))  # noqa: E731
    q = _u8(p)[:, 0, :, 0, 0] / 255.0
    mean_h = [sum(H(x) for x in q[:, i]) / 3 for i in range(4)]
    assert mean_h[0] == pytest.approx(math.log(2), abs=1e-4)
    h = res.heatmap[0, :, 0, 0]
    assert h[0] == 255 and h[1] == round(255 * mean_h[1] / mean_h[0])
    assert h[2] == 0 and h[3] == 0
    # the public code's -p ln p (Eq. 2 as printed)
    res = _attention(_u8(p), config=AttentionConfig(inconsistency_threshold=10.0, cleaning_radius_mm=0.0, entropy="entr"))
    e = [sum(-x * math.log(x) if x > 0 else 0.0 for x in q[:, i]) / 3 for i in range(4)]
    assert res.heatmap[0, 1, 0, 0] == round(255 * e[1] / e[0])
    assert np.allclose(entropy_lut("entr"), entr(np.arange(256) / 255.0))


def test_overlap_within_one_member_with_sigmoid_heads():
    p = np.zeros((3, 2, 3, 1, 1))
    p[:, 0, 0] = 0.8  # voxel 0: organ a everywhere ...
    p[0, 1, 0] = 0.8  # ... and organ b too, in member 0 only: overlap for a and b
    p[0, 0, 1] = 0.9  # voxel 1: a in member 0, b in member 1: different members, no overlap
    p[1, 1, 1] = 0.9
    p[2, 0, 2] = 0.4  # voxel 2: nothing > 0.5
    p[2, 1, 2] = 0.4
    res = _attention(_u8(p), organs=("a", "b"), config=ONLY_OVERLAP)
    assert res.heatmap[:, :, 0, 0].tolist() == [[255, 0, 0], [255, 0, 0]]


def test_overlap_for_one_hot_members_counts_other_members():
    p = np.zeros((3, 2, 3, 1, 1))
    p[2, 1, 0] = 1.0  # voxel 0: the label map (member 2) says b, member 0 says a
    p[0, 0, 0] = 0.9
    p[2, 0, 1] = 1.0  # voxel 1: the label map says a, member 1 says a: agreement
    p[1, 0, 1] = 0.9
    res = _attention(_u8(p), organs=("a", "b"), one_hot=[False, False, True], config=ONLY_OVERLAP)
    # b of the label map overlaps member 0's a; member 0 (sigmoid) has only a: no overlap for a
    assert res.heatmap[:, :, 0, 0].tolist() == [[0, 0, 0], [255, 0, 0]]
    # without the flag, a label map never overlaps itself
    res = _attention(_u8(p), organs=("a", "b"), config=ONLY_OVERLAP)
    assert not res.heatmap.any()


def test_an_organ_a_member_does_not_cover_does_not_count():
    p = np.zeros((3, 2, 4, 1, 1))
    p[:2, 0, 0, 0, 0] = [1.0, 0.0]  # voxel 0: a by members 0, 1: std over two = 0.5
    p[:2, 0, 1, 0, 0] = [1.0, 128 / 255]  # voxel 1: std = (1 - 0.502) / 2
    p[2, 0, :] = 1.0  # member 2 does not predict a: its channel holds garbage
    p[:2, 0, 2] = 0.0  # voxel 2: members 0, 1 agree; garbage 1.0 would give std 0.47
    p[2, 1, 3] = 0.8  # voxel 3: member 2's b with garbage a > 0.5 would be an overlap
    cover = [["a", "b"], ["a", "b"], ["b"]]
    res = _attention(_u8(p), organs=("a", "b"), member_organs=cover, config=ONLY_STD)
    h = res.heatmap[0, :, 0, 0]
    assert h[0] == 255 and h[1] == round(255 * ((1 - 128 / 255) / 2) / 0.5) and h[2] == 0
    res = _attention(_u8(p), organs=("a", "b"), member_organs=cover, config=ONLY_OVERLAP)
    assert not res.heatmap.any()
    # counted, the garbage would show up: the test can fail
    res = _attention(_u8(p), organs=("a", "b"), config=ONLY_STD)
    assert res.heatmap[0, 2, 0, 0] > 0


def test_heatmap_is_sum_of_cleaned_components_normalised_per_organ():
    p = np.zeros((3, 1, 3, 1, 1))
    p[:, 0, 0, 0, 0] = [1.0, 0.0, 0.0]  # std 0.471, entropy 0
    p[:, 0, 1, 0, 0] = [0.5, 0.5, 0.5]  # std 0, entropy ln 2
    p[:, 0, 2, 0, 0] = [0.9, 0.5, 0.1]  # both
    res = _attention(_u8(p), config=AttentionConfig(cleaning_radius_mm=0.0))
    q = _u8(p)[:, 0, :, 0, 0] / 255.0
    std = q.std(axis=0)
    ent = (entr(q) + entr(1 - q)).mean(axis=0)
    h = std + ent
    assert res.heatmap[0, :, 0, 0].tolist() == [round(255 * x / h.max()) for x in h]


# --------------------------------------------------------------------------
# External members, cleaning in mm
# --------------------------------------------------------------------------


def test_external_label_map_changes_attention_only_where_it_disagrees():
    shape = (24, 24, 12)
    a = np.zeros(shape, bool)
    a[4:20, 4:20, 2:10] = True  # organ a; b is the rest of a box
    b = np.zeros(shape, bool)
    b[4:20, 4:20, 10:12] = True
    hard = np.stack([a, b]).astype(np.uint8) * 255
    block2 = np.stack([hard, hard])  # two models that agree exactly
    label = hard.copy()
    blob = np.zeros(shape, bool)
    blob[8:14, 8:14, 3:8] = True  # the external model calls this part of a "b"
    label[0][blob] = 0
    label[1][blob] = 255
    base = _attention(block2, organs=("a", "b"), spacing=(1.5, 1.5, 1.5))
    assert not base.heatmap.any()
    res = _attention(np.stack([hard, hard, label]), organs=("a", "b"), spacing=(1.5, 1.5, 1.5), one_hot=[False, False, True])
    assert np.array_equal(res.region("a"), blob)
    assert np.array_equal(res.region("b"), blob)
    # b of the label map overlaps the models' a there: inconsistency + overlap, the maximum
    assert (res.organ_heatmap("b")[blob] == 255).all()


def _sphere_case(spacing, volume_ml=1.0, fov_mm=48.0, offset_mm=(0.4, -0.3, 0.2), speckle=()):
    """One organ; member 0 sees a sphere of ``volume_ml`` that members 1-2 do not (hard edges)."""
    shape = tuple(int(round(fov_mm / s)) for s in spacing)
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = (3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3)
    inside = sum((g - fov_mm / 2 - o) ** 2 for g, o in zip(grids, offset_mm)) <= r * r
    block = np.zeros((3, 1, *shape), np.uint8)
    block[0, 0][inside] = 255
    for ijk in speckle:
        block[0, 0][ijk] = 255
    return block, inside


def test_cleaning_in_mm_keeps_a_1ml_blob_at_both_spacings_and_drops_speckle():
    sizes = {}
    for spacing in ((1.5, 1.5, 1.5), (3.0, 3.0, 3.0)):
        block, inside = _sphere_case(spacing, speckle=[(1, 1, 1), (2, 12, 3)])
        res = _attention(block, spacing=spacing)
        region = res.region("a")
        assert not region[1, 1, 1] and not region[2, 12, 3]  # 1-voxel speckle removed
        assert np.array_equal(region, inside)  # the whole blob kept (restore on)
        sizes[spacing[0]] = res.size.attention_ml
    # the same physical blob: within 15% of 1 mL and of each other (voxelising a 1 mL
    # sphere at 3 mm alone moves its volume by up to ~10%)
    assert sizes[1.5] == pytest.approx(1.0, rel=0.15)
    assert sizes[3.0] == pytest.approx(1.0, rel=0.15)
    assert sizes[3.0] == pytest.approx(sizes[1.5], rel=0.15)


def test_public_voxel_opening_removes_the_blob_at_3mm():
    cube = ndimage.generate_binary_structure(3, 3)
    for spacing, survives in (((1.5,) * 3, True), ((3.0,) * 3, False)):
        _, inside = _sphere_case(spacing, volume_ml=2.0)
        # the public code: erosion then dilation, 2 iterations of the 26-connected element
        public = ndimage.binary_dilation(ndimage.binary_erosion(inside, cube, iterations=2), cube, iterations=2)
        assert public.any() == survives
        assert np.array_equal(clean_mask(inside, voxel_cube_structure(2), restore=False), public)
        ours = clean_mask(inside, ellipsoid_structure(3.0, spacing), restore=True)
        assert ours.sum() == inside.sum()


def test_thin_disagreement_band_is_removed_in_mm():
    for spacing, thickness_vox in (((1.5,) * 3, 3), ((3.0,) * 3, 2)):  # ~4.5-6 mm thick slabs
        block = np.zeros((3, 1, 30, 30, 30), np.uint8)
        block[0, 0, 3:27, 3:27, 10 : 10 + thickness_vox] = 255
        assert not _attention(block, spacing=spacing).heatmap.any()
        block[0, 0, 3:27, 3:27, 10 : 10 + 5] = 255  # 5 voxels: 7.5-15 mm, kept
        assert _attention(block, spacing=spacing).heatmap.any()


def test_min_component_volume_in_ml():
    block = np.zeros((3, 1, 20, 20, 20), np.uint8)
    block[0, 0, 2:4, 2:4, 2:4] = 255  # 8 voxels x 8 mm3 = 0.064 mL
    block[0, 0, 10:15, 10:15, 10:15] = 255  # 125 voxels = 1 mL
    cfg = AttentionConfig(cleaning_radius_mm=0.0, min_component_ml=0.1)
    res = _attention(block, spacing=(2.0, 2.0, 2.0), config=cfg)
    assert res.size.attention_ml == pytest.approx(1.0)


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (3.0, 3.0, 3.0), (0.7, 0.7, 5.0), (1.0, 2.0, 3.0)])
def test_fast_cleaning_equals_scipy_on_the_whole_volume(spacing):
    rng = np.random.default_rng(7)
    mask = ndimage.gaussian_filter(rng.random((26, 23, 19)), 1.5) > 0.52
    mask[0, :, :5] = True  # touching the volume's border
    for restore in (False, True):
        st = ellipsoid_structure(3.0, spacing)
        expected = clean_mask(mask, st, restore=restore, min_component_voxels=4)
        vox = np.flatnonzero(mask)
        keep = clean_voxels(vox, mask.shape, st, restore=restore, min_component_voxels=4)
        got = np.zeros(mask.size, bool)
        got[vox[keep]] = True
        assert np.array_equal(got.reshape(mask.shape), expected)
    assert st.shape == tuple(2 * int(3.0 / s + 1e-9) + 1 for s in spacing)


# --------------------------------------------------------------------------
# Attention size
# --------------------------------------------------------------------------


def _organ_with_blob(spacing, extra_slices=0):
    """60 mm FOV. Organ a: a 24 mm cube all members agree on, and a 12 mm cube only member 0 sees.

    Organ b (annotated by the dataset in some tests): the same, elsewhere. Nothing overlaps.
    """
    shape = tuple(int(round(60 / s)) for s in spacing)
    block = np.zeros((3, 2, shape[0], shape[1], shape[2] + extra_slices), np.uint8)

    def box(x, y, z):
        return tuple(slice(int(round(lo / s)), int(round(hi / s))) for (lo, hi), s in zip((x, y, z), spacing))

    block[(slice(None), 0, *box((6, 30), (6, 30), (6, 30)))] = 255
    block[(0, 0, *box((36, 48), (6, 18), (6, 18)))] = 255
    block[(slice(None), 1, *box((36, 48), (36, 48), (36, 48)))] = 255
    block[(0, 1, *box((6, 18), (39, 51), (6, 18)))] = 255
    return block


BLOB_ML = 12**3 / 1000  # 1.728


def test_attention_size_in_ml_is_spacing_invariant_and_relative_to_the_organ():
    out = {}
    for spacing in ((1.5, 1.5, 1.5), (3.0, 3.0, 3.0)):
        for cfg in (AttentionConfig(cleaning_radius_mm=0.0), AttentionConfig()):
            res = _attention(_organ_with_blob(spacing), organs=("a", "b"), spacing=spacing, annotated_organs={"b"}, config=cfg)
            a = res.size.organ("a")
            assert a.organ_ml == pytest.approx(24**3 / 1000)
            # exact without cleaning; the opening trims the cube's corners at 3 mm (56 of 64 voxels)
            assert a.attention_ml == pytest.approx(BLOB_ML, rel=0.0 if cfg.cleaning_radius_mm == 0 else 0.15)
            assert a.relative == pytest.approx(a.attention_ml / (24**3 / 1000))
            assert a.slice_ml.sum() == pytest.approx(a.attention_ml)
            assert np.flatnonzero(a.slice_ml).tolist() == list(range(int(6 / spacing[2]), int(18 / spacing[2])))
            b = res.size.organ("b")
            assert not b.scored and b.attention_ml == 0 and not res.organ_heatmap("b").any()
            assert res.size.attention_ml == pytest.approx(a.attention_ml)
            out[spacing, cfg.cleaning_radius_mm] = res.size
    assert out[(1.5,) * 3, 0.0].relative_per_cm == pytest.approx(out[(3.0,) * 3, 0.0].relative_per_cm)
    assert out[(1.5,) * 3, 3.0].relative_per_cm == pytest.approx(out[(3.0,) * 3, 3.0].relative_per_cm, rel=0.15)


def test_relative_size_uses_the_organ_floor_for_tiny_organs():
    block = np.zeros((3, 1, 20, 20, 20), np.uint8)
    block[0, 0, 5:15, 5:15, 5:15] = 255  # only member 0: ensemble mean 0.33, no organ
    res = _attention(block, spacing=(1.0, 1.0, 1.0), config=AttentionConfig(min_organ_ml=10.0))
    a = res.size.organ("a")
    assert a.organ_ml == 0 and a.attention_ml == pytest.approx(1.0)
    assert a.relative == pytest.approx(1.0 / 10.0)


def test_slice_normalisation_divides_by_scan_length():
    spacing = (3.0, 3.0, 3.0)
    short = _attention(_organ_with_blob(spacing), organs=("a", "b"), spacing=spacing)
    long = _attention(_organ_with_blob(spacing, extra_slices=20), organs=("a", "b"), spacing=spacing)
    assert long.size.attention_ml == pytest.approx(short.size.attention_ml)
    ratio = short.size.length_cm / long.size.length_cm
    assert ratio == pytest.approx(20 / 40)
    assert long.size.organ("a").ml_per_cm == pytest.approx(short.size.organ("a").ml_per_cm * ratio)
    assert long.size.relative_per_cm == pytest.approx(short.size.relative_per_cm * ratio)
    a = short.size.organ("a")
    assert a.abdomenatlas == pytest.approx(a.weighted_ml / (27 / 1000) / 20)  # the public number: sum h / slices


def test_annotated_organs_score_zero_unless_configured():
    spacing = (3.0, 3.0, 3.0)
    block = _organ_with_blob(spacing)
    res = _attention(block, organs=("a", "b"), spacing=spacing, annotated_organs={"b"})
    assert res.size.organ("b").attention_ml == 0
    res = _attention(block, organs=("a", "b"), spacing=spacing, annotated_organs={"b"}, config=AttentionConfig(score_annotated=True))
    assert res.size.organ("b").scored and res.size.organ("b").attention_ml == pytest.approx(BLOB_ML, rel=0.15)


def test_records_for_the_catalog_tables():
    spacing = (3.0, 3.0, 3.0)
    res = _attention(_organ_with_blob(spacing), organs=("a", "b"), spacing=spacing, annotated_organs={"b"}, case_id="c1", dataset="d1")
    rec = res.size.to_records(round_index=2)
    (case,) = rec.attention_case
    assert case["case_id"] == "c1" and case["round"] == 2 and case["dataset"] == "d1"
    assert case["attention_ml"] == pytest.approx(res.size.organ("a").attention_ml) and case["organs_scored"] == 1
    assert [r["organ"] for r in rec.attention_organ] == ["a", "b"]
    assert len(rec.attention_slice) == 20 and {r["organ"] for r in rec.attention_slice} == {"a"}
    assert sum(r["attention_ml"] for r in rec.attention_slice) == pytest.approx(case["attention_ml"])
    assert case["attention_ml"] == pytest.approx(BLOB_ML, rel=0.15)


# --------------------------------------------------------------------------
# The vectorised kernel equals the transcription
# --------------------------------------------------------------------------


def _organ_like(rng, members, organs, shape, inside=0.12):
    """Smooth blobs with sigmoid edges per organ, members jittered: interiors 255, background 0, bands between."""
    base = ndimage.gaussian_filter(rng.random((organs, *shape)), (0, 2.5, 2.5, 2.5))
    out = np.zeros((members, organs, *shape))
    for m in range(members):
        field = base + ndimage.gaussian_filter(rng.random((organs, *shape)), (0, 2, 2, 2)) * 0.02
        for c in range(organs):
            t = np.quantile(field[c], 1 - inside)
            out[m, c] = 1 / (1 + np.exp(-(field[c] - t) / (field[c].std() * 0.15)))
    return _u8(out)


@pytest.mark.parametrize(
    "cfg",
    [
        AttentionConfig(),
        AttentionConfig(entropy="entr", cleaning_restore=False, clean_overlap=True),
        AttentionConfig(cleaning_radius_mm=0.0, min_component_ml=0.02),
        # tiny thresholds (not 0: the float transcription's std of equal values can be 1e-17 > 0)
        AttentionConfig(inconsistency_threshold=1e-3, uncertainty_threshold=1e-3, cleaning_radius_mm=2.0),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_vectorised_equals_transcription_on_random_inputs(cfg, backend):
    rng = np.random.default_rng(3)
    # dense noise (every voxel active) and sparse, organ-like values (most voxels 0)
    dense = rng.integers(0, 256, (3, 4, 13, 11, 7), dtype=np.uint8)  # 1001 voxels: not a multiple of 8
    sparse = _organ_like(rng, 3, 5, (24, 20, 16))
    _assert_matches_transcription(dense, (1.5, 1.5, 3.0), cfg, backend=backend)
    _assert_matches_transcription(sparse, (1.0, 1.0, 1.0), cfg, backend=backend)
    cover = np.ones((3, 5), bool)
    cover[2, 1] = cover[0, 4] = False
    # member 1: a label map (argmax of smooth fields, background included)
    fields = ndimage.gaussian_filter(rng.random((6, 24, 20, 16)), (0, 2, 2, 2))
    label = fields.argmax(axis=0)
    mixed = sparse.copy()
    mixed[1] = np.stack([(label == c + 1) for c in range(5)]).astype(np.uint8) * 255
    res = _assert_matches_transcription(
        mixed, (2.0, 2.0, 2.0), cfg, one_hot=[False, True, False], coverage=cover, annotated=("o3",), backend=backend
    )
    assert res.heatmap.any()


def test_sparse_and_dense_paths_agree(monkeypatch):
    """The numpy kernel's two paths (its constants only steer that backend)."""
    rng = np.random.default_rng(5)
    block = _u8(ndimage.gaussian_filter(rng.random((3, 3, 20, 18, 17)), (0, 0, 2, 2, 2)) ** 10 * 1500 / 255)
    sparse = _attention(block, organs=("a", "b", "c"), spacing=(2.0, 2.0, 2.0), backend="numpy")
    monkeypatch.setattr(kernel, "DENSE_FRACTION", 0.0)
    monkeypatch.setattr(kernel, "CHUNK_WORDS", 64)
    monkeypatch.setattr(kernel, "OVERLAP_SLICE_VOXELS", 100)
    dense = _attention(block, organs=("a", "b", "c"), spacing=(2.0, 2.0, 2.0), backend="numpy")
    assert sparse.heatmap.any()
    assert np.array_equal(sparse.heatmap, dense.heatmap)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def test_soft_predictions_with_different_organs_and_a_real_file(tmp_path):
    rng = np.random.default_rng(11)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    arrays = _u8(ndimage.gaussian_filter(rng.random((3, 3, 16, 16, 10)), (0, 0, 2, 2, 1)) ** 8 * 300 / 255)
    preds = [
        SoftPrediction(arrays[0], affine, ("liver", "spleen", "pancreas"), "unet"),
        SoftPrediction(arrays[1, :2], affine, ("liver", "spleen"), "segresnet"),
        SoftPrediction(arrays[2, [2, 0]], affine, ("pancreas", "liver"), "totalseg"),
    ]
    res = attention_from_predictions(preds, case_id="c9")
    assert res.organs == ("liver", "spleen", "pancreas")
    block = np.zeros((3, 3, 16, 16, 10), np.uint8)
    block[0] = arrays[0]
    block[1, :2] = arrays[1, :2]
    block[2, 2], block[2, 0] = arrays[2, 2], arrays[2, 0]
    cover = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 1]], bool)
    ref = _assert_matches_transcription(block, (2.0, 2.0, 3.0), AttentionConfig(), coverage=cover)
    assert np.array_equal(res.heatmap, ref.heatmap)
    path = write_soft_prediction(tmp_path / "c9.nii.gz", res.to_soft_prediction())
    back = read_soft_prediction(path, res.organs, member="attention")
    assert np.array_equal(back.array, res.heatmap) and np.allclose(back.affine, affine)


def test_bad_inputs_are_named_and_inputs_are_not_modified():
    block = np.zeros((2, 1, 4, 4, 4), np.uint8)
    block[0, 0, 1, 1, 1] = 200
    before = block.copy()
    _attention(block)
    assert np.array_equal(block, before)
    with pytest.raises(AlqaInputError, match="uint8"):
        _attention(block.astype(np.float32))
    with pytest.raises(AlqaInputError, match="distinct organ names"):
        _attention(block, organs=("a", "b"))
    with pytest.raises(AlqaInputError, match="spacing_mm"):
        _attention(block, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(AlqaInputError, match="not channels"):
        _attention(block, member_organs=[["a"], ["kidney"]])
    a = SoftPrediction(block[0], np.eye(4), ("a",), "m0")
    b = SoftPrediction(block[1], np.diag([2.0, 1.0, 1.0, 1.0]), ("a",), "m1")
    with pytest.raises(AlqaInputError, match="m1"):
        attention_from_predictions([a, b])
    with pytest.raises(ValueError, match="entropy"):
        AttentionConfig(entropy="log2")


@pytest.mark.parametrize("shape", [(3, 1, 2, 2, 1), (1, 2, 3, 3, 3), (2, 1, 1, 1, 9)])
def test_tiny_volumes_single_member_and_single_organ(shape):
    rng = np.random.default_rng(sum(shape))
    block = rng.integers(0, 256, shape, dtype=np.uint8)
    _assert_matches_transcription(block, (1.0, 1.0, 1.0), AttentionConfig(cleaning_radius_mm=0.0))
    _assert_matches_transcription(block, (1.0, 1.0, 1.0), AttentionConfig())


def test_real_labels_at_3mm_keep_a_pancreas_disagreement_the_public_opening_drops(real_ct_dir):
    """The lead's finding on real anatomy: two label-map members that differ by a ~1 mL pancreas blob."""
    from alqa_core.io.nifti import read_label
    from alqa_core.organs import DEFAULT_ORGAN_TABLE, class_map_preset, remap_labels

    lab = read_label(real_ct_dir / "totalsegmentator_v2_labels.nii.gz")
    labels = remap_labels(np.asarray(lab.array), class_map_preset("total"), DEFAULT_ORGAN_TABLE).array[::3, ::3, :]
    spacing = (lab.spacing_mm[0] * 3, lab.spacing_mm[1] * 3, lab.spacing_mm[2])  # ~2.9 x 2.9 x 2 mm
    names = DEFAULT_ORGAN_TABLE.names
    pancreas = labels == DEFAULT_ORGAN_TABLE.value_of("pancreas")
    assert pancreas.sum() > 100
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(labels.shape, spacing)], indexing="ij")
    thickest = np.unravel_index(ndimage.distance_transform_edt(pancreas, sampling=spacing).argmax(), labels.shape)
    centre = [g[thickest] for g in grids]
    ball = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= 10.0**2
    blob = pancreas & ball  # the second model misses this part of the pancreas
    other = labels.copy()
    other[blob] = 0
    one_hot = lambda lab: np.stack([(lab == v) for v in DEFAULT_ORGAN_TABLE.values]).astype(np.uint8) * 255  # noqa: E731
    block = np.stack([one_hot(labels), one_hot(other)])
    res = compute_attention(block, organs=names, spacing_mm=spacing, one_hot=[True, True])
    blob_ml = blob.sum() * np.prod(spacing) / 1000
    assert 0.5 < blob_ml < 3.0
    # the opening trims the blob where the pancreas is thinner than ~6 mm (measured: 27 of its
    # 48 voxels stay); the public opening keeps none
    kept = res.size.organ("pancreas").attention_ml
    assert 0.5 * blob_ml <= kept <= blob_ml
    assert res.region("pancreas")[~blob].sum() == 0
    assert sum(o.attention_ml for o in res.size.organs if o.organ != "pancreas") == 0
    inconsistent = np.abs(block[0].astype(int) - block[1].astype(int)).max(axis=0) > 0
    cube = ndimage.generate_binary_structure(3, 3)
    public = ndimage.binary_dilation(ndimage.binary_erosion(inconsistent, cube, iterations=2), cube, iterations=2)
    assert inconsistent.sum() == blob.sum() and not public.any()
