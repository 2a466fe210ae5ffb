"""Metrics on shapes whose answers are worked out by hand, checked against MONAI and scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import stats

from alqa_core.errors import AlqaInputError
from alqa_core.evaluation.attention_eval import AttentionScore, error_region, evaluate_attention, score_attention
from alqa_core.evaluation.segmentation import evaluate_case, mask_metrics, to_records
from alqa_core.evaluation.statistics import describe, paired_tests, summarize
from alqa_core.organs import DEFAULT_ORGAN_TABLE
from alqa_core.volume import LabelMap

SPACING = (1.0, 2.0, 3.0)  # anisotropic on purpose: mm along i, j, k
AFFINE = np.diag([*SPACING, 1.0])


def cube(shape=(20, 20, 20), start=(5, 5, 5), size=(6, 6, 6)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return m


# --------------------------------------------------------------------------
# Two 6^3 cubes offset by a known number of voxels.
#
# Edges are the cube's boundary voxels (erosion XOR mask): 216 - 64 = 152 per
# cube. Shift by 1 voxel along k (3 mm), cube G = [5..10]^3, P = G + (0,0,1):
#   pred->gt: ring voxels (i or j on the boundary) with k in 6..10 lie on G's
#   edge: 5 * 20 = 100 at 0 mm; the ring at k = 11: 20 at 3 mm (to k = 10);
#   P's face k = 6 (i, j in 6..9) is inside G: distance min(1*di, 2*dj, 3*1)
#   -> 8 voxels with i in {6, 9} at 1 mm, 8 with i in {7, 8} at 2 mm;
#   P's face k = 11: 16 at 3 mm. gt->pred is the mirror image.
# Pooled 304: 200 x 0, 16 x 1, 16 x 2, 72 x 3 mm.
# --------------------------------------------------------------------------
SHIFT_K = dict(
    pred_start=(5, 5, 6),
    dice=2 * 180 / 432,
    msd=(16 * 1 + 16 * 2 + 72 * 3) / 304,
    hd95=3.0,
    hd=3.0,
    nsd={0.5: 200 / 304, 1.5: 216 / 304, 2.5: 232 / 304, 3.0: 1.0, 3.5: 1.0},
)
# Shift by 2 voxels along i (1 mm): ring voxels with i in 7..10 at 0 (80), the
# ring at i = 11 at 1 mm (20) and i = 12 at 2 mm (20); both i-faces' interiors
# at 2 mm (16 + 16: min(2, 2*dj, 3*dk) = 2). Pooled: 160 x 0, 40 x 1, 104 x 2.
SHIFT_I = dict(
    pred_start=(7, 5, 5),
    dice=2 * 144 / 432,
    msd=(40 * 1 + 104 * 2) / 304,
    hd95=2.0,
    hd=2.0,
    nsd={0.5: 160 / 304, 1.5: 200 / 304, 2.0: 1.0, 2.5: 1.0},
)


@pytest.mark.parametrize("case", [SHIFT_K, SHIFT_I], ids=["shift_k_3mm", "shift_i_2x1mm"])
def test_offset_cubes_match_hand_computation(case):
    gt, pred = cube(), cube(start=case["pred_start"])
    for tol, nsd in case["nsd"].items():
        m = mask_metrics(pred, gt, SPACING, tolerance_mm=tol, organ="liver")
        assert m.nsd == pytest.approx(nsd, abs=1e-9), tol
        assert m.tolerance_mm == tol
    assert m.dice == pytest.approx(case["dice"])
    assert m.msd_mm == pytest.approx(case["msd"], rel=1e-6)
    assert m.hd95_mm == pytest.approx(case["hd95"], rel=1e-6)
    assert m.hd_mm == pytest.approx(case["hd"], rel=1e-6)
    assert m.rve == 0.0
    assert m.gt_ml == pytest.approx(216 * 6 / 1000) and m.pred_ml == m.gt_ml


def test_nsd_below_and_above_the_offset_and_wrong_axis_order_would_fail():
    gt, pred = cube(), cube(start=(5, 5, 6))  # 3 mm offset along k
    assert mask_metrics(pred, gt, SPACING, tolerance_mm=2.9).nsd < 1.0
    assert mask_metrics(pred, gt, SPACING, tolerance_mm=3.0).nsd == 1.0
    # the spacing really is applied per axis: reversed spacing gives 1 mm steps on k
    assert mask_metrics(pred, gt, SPACING[::-1]).hd_mm == pytest.approx(1.0)


def test_rve_is_exact_and_signed():
    gt = cube(size=(6, 6, 6))
    big = cube(size=(6, 6, 8))
    small = cube(size=(6, 6, 3))
    assert mask_metrics(big, gt, SPACING).rve == pytest.approx((288 - 216) / 216)
    assert mask_metrics(small, gt, SPACING).rve == pytest.approx((108 - 216) / 216)


def _blob(shape, centre, radii):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI's own internal call
def test_agrees_with_monai_separate_functions():
    shape = (28, 24, 18)
    gt = _blob(shape, (13, 11, 8), (8, 6, 4)) | _blob(shape, (20, 16, 10), (4, 3, 3))
    pred = _blob(shape, (14, 12, 9), (7, 6, 5))
    spacing = (0.8, 1.3, 2.5)
    tol = 1.7
    ours = mask_metrics(pred, gt, spacing, tolerance_mm=tol)
    yp = torch.from_numpy(pred)[None, None].float()
    y = torch.from_numpy(gt)[None, None].float()
    kw = dict(include_background=True, spacing=list(spacing))
    assert ours.nsd == pytest.approx(float(compute_surface_dice(yp, y, [tol], **kw)), rel=1e-6)
    assert ours.hd95_mm == pytest.approx(float(compute_hausdorff_distance(yp, y, percentile=95, **kw)), rel=1e-5)
    assert ours.hd_mm == pytest.approx(float(compute_hausdorff_distance(yp, y, **kw)), rel=1e-6)
    assert ours.msd_mm == pytest.approx(
        float(compute_average_surface_distance(yp, y, symmetric=True, **kw)), rel=1e-5
    )
    assert ours.dice == pytest.approx(float(compute_dice(yp, y, include_background=True)), rel=1e-6)
    assert 0.3 < ours.dice < 0.95 and ours.hd95_mm > 0  # a non-trivial case


def test_empty_mask_conventions():
    empty = np.zeros((10, 10, 10), dtype=bool)
    full = cube(shape=(10, 10, 10), start=(2, 2, 2), size=(4, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI empty-mask warnings, no numpy NaN warnings
        both = mask_metrics(empty, empty, SPACING)
        missed = mask_metrics(empty, full, SPACING)
        spurious = mask_metrics(full, empty, SPACING)
    assert (both.dice, both.nsd, both.hd95_mm, both.hd_mm, both.msd_mm, both.rve) == (1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    assert (missed.dice, missed.nsd, missed.rve) == (0.0, 0.0, -1.0)
    assert np.isnan(missed.hd95_mm) and np.isnan(missed.msd_mm) and np.isnan(missed.hd_mm)
    assert (spurious.dice, spurious.nsd) == (0.0, 0.0)
    assert np.isnan(spurious.rve) and np.isnan(spurious.hd95_mm)
    assert spurious.gt_ml == 0.0 and spurious.pred_ml == pytest.approx(64 * 6 / 1000)


def test_evaluate_case_per_organ_records_and_grid_check():
    table = DEFAULT_ORGAN_TABLE
    gt = np.zeros((20, 20, 20), dtype=np.uint8)
    gt[cube()] = table.value_of("liver")
    gt[cube(start=(0, 0, 0), size=(3, 3, 3))] = table.value_of("spleen")
    pred = np.zeros_like(gt)
    pred[cube(start=(5, 5, 6))] = table.value_of("liver")
    pred_map, gt_map = LabelMap(pred, AFFINE), LabelMap(gt, AFFINE)
    rows = evaluate_case(pred_map, gt_map, table, organs=["liver", "spleen", "pancreas"], case_id="c1",
                         tolerance_mm={"liver": 0.5, "spleen": 1.0, "pancreas": 2.0})
    liver, spleen, pancreas = rows
    assert liver.dice == pytest.approx(SHIFT_K["dice"]) and liver.nsd == pytest.approx(200 / 304)
    assert spleen.dice == 0.0 and spleen.rve == -1.0
    assert pancreas.dice == 1.0  # absent in both
    recs = to_records(rows)
    assert [r["organ"] for r in recs] == ["liver", "spleen", "pancreas"]
    assert recs[0]["case_id"] == "c1" and recs[0]["tolerance_mm"] == 0.5 and "hd95_mm" in recs[0]
    moved = LabelMap(pred, AFFINE @ np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    with pytest.raises(AlqaInputError, match="c1"):
        evaluate_case(moved, gt_map, table, case_id="c1")
    assert not pred_map.array.flags.writeable and pred_map.array[5, 5, 6] == table.value_of("liver")


def test_describe_and_summarize():
    values = [0.9, 0.8, float("nan"), 0.7, 0.95, 0.6]
    d = describe(values)
    finite = np.array([0.9, 0.8, 0.7, 0.95, 0.6])
    assert (d.n, d.n_missing) == (5, 1)
    assert d.mean == pytest.approx(finite.mean()) and d.sd == pytest.approx(finite.std(ddof=1))
    assert d.p5 == pytest.approx(np.percentile(finite, 5)) and d.p95 == pytest.approx(np.percentile(finite, 95))
    assert describe([]).n == 0 and np.isnan(describe([]).mean)
    assert np.isnan(describe([1.0]).sd)

    gt = cube()
    rows = [mask_metrics(cube(start=s), gt, SPACING, case_id=f"c{i}", organ="liver")
            for i, s in enumerate([(5, 5, 5), (5, 5, 6), (7, 5, 5)])]
    summary = {(s.organ, s.metric): s for s in summarize(rows)}
    dice = summary[("liver", "dice")]
    assert dice.n == 3 and dice.mean == pytest.approx((1 + SHIFT_K["dice"] + SHIFT_I["dice"]) / 3)
    assert summary[("liver", "hd95_mm")].p95 == pytest.approx(np.percentile([0, 3, 2], 95))


def test_paired_tests_match_scipy():
    a = np.array([0.81, 0.77, 0.90, 0.66, 0.85, 0.72, 0.93, 0.80])
    b = np.array([0.79, 0.70, 0.91, 0.60, 0.80, 0.69, 0.88, 0.74])
    r = paired_tests(a, b)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b)
    assert r.n == 8 and r.mean_diff == pytest.approx(np.mean(a - b))
    assert (r.t, r.p_t) == pytest.approx((t.statistic, t.pvalue))
    assert (r.w, r.p_wilcoxon) == pytest.approx((w.statistic, w.pvalue))
    assert r.p_t < 0.05  # b is consistently lower


def test_paired_tests_edge_cases():
    a = [0.5, 0.6, 0.7]
    same = paired_tests(a, a)
    assert (same.mean_diff, same.t, same.p_t, same.w, same.p_wilcoxon, same.n) == (0.0, 0.0, 1.0, 0.0, 1.0, 3)
    dropped = paired_tests([0.5, float("nan"), 0.7, 0.9], [0.4, 0.6, 0.65, 0.7])
    assert dropped.n == 3 and dropped.mean_diff == pytest.approx(np.mean([0.1, 0.05, 0.2]))
    assert np.isnan(paired_tests([0.5], [0.4]).t)
    with pytest.raises(ValueError):
        paired_tests([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------
# Attention maps vs error regions (003 Table 1)
# --------------------------------------------------------------------------


def _attention_case():
    """Pseudo vs GT with 3 separate error components; attention hits 2 plus 1 false blob."""
    gt = cube(shape=(30, 30, 30), start=(5, 5, 5), size=(20, 20, 20))
    pseudo = gt.copy()
    pseudo[5:9, 5:9, 5:9] = False  # FN corner (64 voxels)
    pseudo[25:28, 10:14, 10:14] = True  # FP bump outside (48 voxels)
    pseudo[12:16, 12:16, 24:25] = False  # FN dent on the k = 24 face (16 voxels)
    attention = np.zeros(gt.shape, dtype=np.float32)
    attention[6:10, 6:10, 6:10] = 0.7  # overlaps the FN corner
    attention[24:27, 11:13, 11:13] = 0.4  # overlaps the FP bump
    attention[15:18, 15:18, 0:3] = 0.9  # nowhere near an error
    return gt, pseudo, attention


def test_attention_sensitivity_and_precision_two_of_three():
    gt, pseudo, attention = _attention_case()
    err = error_region(pseudo, gt)
    s = score_attention(attention, err, voxel_volume_ml=0.001, min_error_ml=0.0, case_id="c", organ="liver")
    assert isinstance(s, AttentionScore)
    assert (s.error_components, s.error_components_hit) == (3, 2)
    assert (s.attention_components, s.attention_components_hit) == (3, 2)
    assert s.sensitivity == pytest.approx(2 / 3) and s.precision == pytest.approx(2 / 3)
    # binarising at a higher threshold drops the FP-bump blob (0.4): 1 of 3 errors, 1 of 2 blobs
    hi = score_attention(attention, err, 0.001, min_error_ml=0.0, attention_threshold=0.5)
    assert hi.sensitivity == pytest.approx(1 / 3) and hi.precision == pytest.approx(1 / 2)


def test_attention_min_error_size_in_ml():
    gt, pseudo, attention = _attention_case()
    err = error_region(pseudo, gt)
    # 1 mm^3 voxels: components are 0.064, 0.048 and 0.016 mL; 0.02 mL drops the missed dent
    s = score_attention(attention, err, voxel_volume_ml=0.001, min_error_ml=0.02)
    assert (s.error_components, s.ignored_error_components, s.sensitivity) == (2, 1, 1.0)
    assert s.precision == pytest.approx(2 / 3)  # precision still sees every error voxel


def test_attention_undefined_ratios_are_nan():
    z = np.zeros((8, 8, 8), dtype=bool)
    s = score_attention(z, z, 0.001)
    assert np.isnan(s.sensitivity) and np.isnan(s.precision)


def test_evaluate_attention_on_label_maps():
    table = DEFAULT_ORGAN_TABLE
    gt_mask, pseudo_mask, attention = _attention_case()
    v = table.value_of("stomach")
    gt = LabelMap(np.where(gt_mask, v, 0).astype(np.uint8), np.eye(4))
    pseudo = LabelMap(np.where(pseudo_mask, v, 0).astype(np.uint8), np.eye(4))
    (s,) = evaluate_attention({"stomach": attention}, pseudo, gt, table, min_error_ml=0.0, case_id="c7")
    assert (s.organ, s.case_id, s.sensitivity, s.precision) == ("stomach", "c7", pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert summarize([s], metrics=("sensitivity", "precision"))[0].mean == pytest.approx(2 / 3)
    with pytest.raises(AlqaInputError, match="liver"):
        evaluate_attention({"stomach": attention}, pseudo, gt, table, organs=["liver"])
    with pytest.raises(AlqaInputError, match="shape"):
        evaluate_attention({"stomach": attention[:-1]}, pseudo, gt, table)
