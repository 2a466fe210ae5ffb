"""Slice/volume query strategies (004): uncertainty curves, candidates, USS/RSS/UVS/RVS, fg-random, effort, partial labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import InferenceConfig
from alqa_core.ensemble.inference import mc_dropout_predict
from alqa_core.ensemble.networks import build_network
from alqa_core.organs import OrganTable
from alqa_core.strategies import effort
from alqa_core.strategies.effort_model import BudgetFiller, EffortModel, case_effort, volume_effort
from alqa_core.strategies.partial import annotated_voxels_for_slices, partial_training_case, selection_training_cases
from alqa_core.strategies.registry import STRATEGIES, select
from alqa_core.strategies.selection import Selection, SliceSelection
from alqa_core.strategies.slice_sampling import foreground_random_sampling, uncertainty_slice_sampling
from alqa_core.strategies.uncertainty import CaseUncertainty, candidate_slices, case_uncertainty, dilated_foreground, slice_uncertainty, volume_uncertainty
from alqa_core.strategies.volume_sampling import uncertainty_volume_sampling
from alqa_core.training.cases import TrainingCase, one_hot_organs
from alqa_core.training.losses import masked_dice_bce_loss

TABLE = OrganTable.from_pairs([(1, "spleen"), (5, "liver")])


# --------------------------------------------------------------------------- uncertainty curves


def test_slice_uncertainty_mean_sum_axis_and_foreground():
    rng = np.random.default_rng(0)
    ent = rng.random((2, 4, 5, 6)).astype(np.float32)
    total = ent.astype(np.float64).sum(0)
    np.testing.assert_allclose(slice_uncertainty(ent), total.mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(slice_uncertainty(ent, reduce="sum"), total.sum(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(slice_uncertainty(ent, axis=0), total.mean(axis=(1, 2)), rtol=1e-6)
    # a 3D entropy is taken as is
    np.testing.assert_allclose(slice_uncertainty(total.astype(np.float32)), total.mean(axis=(0, 1)), rtol=1e-6)
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, :3] = True
    curve = slice_uncertainty(ent, foreground=mask)
    for k in range(3):
        assert curve[k] == pytest.approx(total[1:3, 2:4, k].mean(), rel=1e-6)
    assert np.all(curve[3:] == 0.0)  # no masked voxel: 0
    with pytest.raises(ValueError, match="reduce"):
        slice_uncertainty(ent, reduce="max")
    with pytest.raises(ValueError, match="NaN"):
        slice_uncertainty(np.full((2, 2, 2), np.nan))


def test_volume_uncertainty_and_dilation():
    ent = np.zeros((1, 20, 20, 20), np.float32)
    ent[0, 10, 10, 10] = 8.0
    assert volume_uncertainty(ent) == pytest.approx(8.0 / 8000)
    seed = np.zeros((20, 20, 20), bool)
    seed[10, 10, 10] = True
    region = dilated_foreground(seed, 11)
    assert region.sum() == 11**3 and region[5, 15, 10] and not region[4, 10, 10]
    assert volume_uncertainty(ent, region) == pytest.approx(8.0 / 11**3)
    with pytest.raises(ValueError, match="empty"):
        volume_uncertainty(ent, np.zeros((20, 20, 20), bool))


def test_candidates_are_local_maxima_min_distance_apart_strongest_first():
    rng = np.random.default_rng(3)
    curve = rng.random(120)
    cands = candidate_slices(curve, min_distance=5)
    assert len(cands) > 5
    assert all(abs(a - b) >= 5 for a, b in itertools.combinations(cands, 2))
    strengths = curve[list(cands)]
    assert np.all(np.diff(strengths) <= 0)
    for c in cands:  # each is a local maximum
        lo, hi = max(c - 1, 0), min(c + 2, curve.size)
        assert curve[c] == curve[lo:hi].max()
    # the global maximum is always a candidate, and it comes first
    assert cands[0] == int(np.argmax(curve))
    assert candidate_slices(curve, 5, max_candidates=3) == cands[:3]


def test_candidates_edges_plateaus_and_close_peaks():
    curve = np.zeros(30)
    curve[[0, 3, 10, 12, 29]] = [5.0, 4.0, 3.0, 3.5, 2.0]
    # 3 is within 5 of the stronger 0; 10 within 5 of the stronger 12; edges count
    assert candidate_slices(curve, 5) == (0, 12, 29)
    assert candidate_slices(curve, 1) == (0, 3, 12, 10, 29)
    plateau = np.array([0, 1, 1, 1, 0, 0, 0, 0, 0, 2, 2], dtype=float)
    assert candidate_slices(plateau, 5) == (9, 2)
    assert candidate_slices(np.ones(7)) == (3,)
    assert candidate_slices(np.zeros(0)) == ()
    with pytest.raises(ValueError):
        candidate_slices(np.array([1.0, np.nan]))


def test_case_uncertainty_from_mc_dropout_of_a_tiny_unet():
    torch.manual_seed(0)
    net = build_network(ModelSpec("unet", "tiny", 2, dropout=0.3))
    image = np.random.default_rng(0).random((32, 32, 24)).astype(np.float32)
    cfg = InferenceConfig(roi_size_vox=(32, 32, 32), sw_batch_size=1, roi_divisible_by=16, device="cpu")
    mc = mc_dropout_predict(net, image, 3, cfg, seed=0)
    cu = case_uncertainty("mc", mc.predictive_entropy, mc.mean_probabilities, annotated_slices=(2,))
    assert cu.n_slices == 24 and cu.annotated_slices == (2,)
    np.testing.assert_allclose(cu.slice_uncertainty, mc.total_entropy.astype(np.float64).mean(axis=(0, 1)), rtol=1e-5)
    assert np.all(cu.slice_uncertainty > 0) and np.all(cu.slice_uncertainty <= 2 * np.log(2) + 1e-6)
    fg = (mc.mean_probabilities > 0.5).any(0)
    np.testing.assert_array_equal(cu.slice_foreground, fg.sum(axis=(0, 1)))
    expected = volume_uncertainty(mc.total_entropy, dilated_foreground(fg)) if fg.any() else float(mc.total_entropy.mean())
    assert cu.volume_uncertainty == pytest.approx(expected, rel=1e-5)
    peaks = uncertainty_slice_sampling([cu], 1 + 2 / 3)  # this curve has 3 peaks 5 apart from slice 2 and each other
    assert len(peaks.slices_of("mc")) == 3 and all(abs(s - 2) >= 5 for s in peaks.slices_of("mc"))
    more = uncertainty_slice_sampling([cu], 2.0)  # a 4th slice: the fallback, at a relaxed distance (3) from all others
    picked = more.slices_of("mc")
    assert set(peaks.slices_of("mc")) < set(picked) and more.effort_slices == pytest.approx(2.0)
    assert all(abs(a - b) >= 3 for a in (*picked, 2) for b in (*picked, 2) if a != b)


# --------------------------------------------------------------------------- effort


def test_effort_formula():
    sel = Selection("x", (SliceSelection("a", (4, 1, 7, 9)), SliceSelection("b", (3,))), 0.0)
    assert effort(sel) == pytest.approx((1 + 3 / 3) + 1)
    assert volume_effort(1) == 1.0
    assert volume_effort(301) == pytest.approx(101.0)
    # N slices of one volume ~ N/3 slices of different volumes
    assert case_effort(range(30)) == pytest.approx(1 + 29 / 3)
    # 004's "empty slices are negligible", optional
    model = EffortModel(empty_slice=0.0)
    fg = np.array([False, True, True, False, True])
    assert case_effort([0, 1, 2, 3, 4], model, fg) == pytest.approx(1 + 2 / 3)
    assert case_effort([0, 3], model, fg) == 0.0
    assert case_effort([0, 3], EffortModel(), fg) == pytest.approx(1 + 1 / 3)  # default ignores flags
    with pytest.raises(ValueError):
        EffortModel(first_slice=0)


def test_budget_filler_skips_what_does_not_fit():
    filler = BudgetFiller(1.5, EffortModel())
    assert filler.offer("a", 0)  # 1
    assert not filler.offer("b", 0)  # would be 2
    assert filler.offer("a", 5)  # 1 + 1/3
    assert not filler.offer("a", 5)  # already taken
    assert filler.spent == pytest.approx(4 / 3)
    assert filler.exhausted  # even a further 1/3 would make 5/3 > 1.5
    assert not filler.offer("c", 1) and not filler.offer("a", 9)
    roomy = BudgetFiller(2.0, EffortModel())
    assert roomy.offer("a", 0) and not roomy.exhausted and roomy.offer("a", 1) and roomy.offer("a", 2)
    assert roomy.spent == pytest.approx(5 / 3) and not roomy.exhausted
    assert roomy.offer("a", 3) and roomy.spent == pytest.approx(2.0) and roomy.exhausted  # 1 + 3/3, exactly


# --------------------------------------------------------------------------- strategies


def _pool(n_cases=6, n_slices=40, seed=0):
    rng = np.random.default_rng(seed)
    return [
        CaseUncertainty(
            f"case{i:02d}",
            n_slices,
            slice_uncertainty=rng.random(n_slices),
            volume_uncertainty=float(rng.random()),
            slice_foreground=np.where(rng.random(n_slices) < 0.5, 0.0, rng.integers(1, 100, n_slices)),
            annotated_slices=tuple(rng.choice(n_slices, 3, replace=False)) if i % 2 else (),
        )
        for i in range(n_cases)
    ]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("budget", [0.0, 0.9, 4.0, 25.0])
def test_every_strategy_respects_budget_exclusions_and_seed(name, budget):
    pool = _pool()
    excluded = {"case01", "case04"}
    a = select(name, pool, budget, seed=7, exclude_cases=excluded)
    b = select(name, list(reversed(pool)), budget, seed=7, exclude_cases=excluded)
    assert a == b  # deterministic per seed, whatever the pool order
    assert a.strategy == name
    assert a.effort_slices <= budget + 1e-9
    assert a.effort_slices == pytest.approx(effort(a))
    smallest_volume = min(volume_effort(c.n_slices - len(c.annotated_slices)) for c in pool)
    if budget < 1:
        assert a.items == ()
    elif name not in ("uvs", "rvs") or budget >= smallest_volume:
        assert a.items
    by_id = {c.case_id: c for c in pool}
    for item in a.items:
        assert item.case_id not in excluded
        assert not set(item.slices) & set(by_id[item.case_id].annotated_slices)
        assert max(item.slices) < by_id[item.case_id].n_slices


@pytest.mark.parametrize("name", ["rss", "rvs", "fg_random"])
def test_random_strategies_depend_on_the_seed(name):
    pool = _pool(n_cases=12)
    picks = {select(name, pool, 30.0, seed=s).items for s in range(5)}
    assert len(picks) > 1


def test_strategies_fill_the_budget_in_effort_units():
    pool = [CaseUncertainty(f"v{i}", 10, np.linspace(0, 1, 10), float(i)) for i in range(4)]
    # a whole 10-slice volume costs 1 + 9/3 = 4: a budget of 9 takes two volumes
    uvs = select("uvs", pool, 9.0)
    assert uvs.case_ids == ("v3", "v2") and uvs.effort_slices == pytest.approx(8.0)
    assert uvs.slices_of("v3") == tuple(range(10))
    # random slices take as much as fits: at most 1/3 unused
    rss = select("rss", pool, 9.0, seed=1)
    assert 9.0 - 1 / 3 - 1e-9 <= rss.effort_slices <= 9.0 + 1e-9


def test_uss_picks_the_known_most_uncertain_slices():
    n = 50
    base = np.full(n, 0.1)
    curves = {"a": base.copy(), "b": base.copy(), "c": base.copy()}
    curves["a"][[10, 12]] = [0.9, 0.95]  # 12 wins, 10 is within 5 slices: not a candidate
    curves["a"][30] = 0.5
    curves["b"][40] = 0.8
    curves["c"][5] = 0.3
    pool = [CaseUncertainty(k, n, v) for k, v in curves.items()]
    # candidates by strength: a:12 (.95), b:40 (.8), a:30 (.5), c:5 (.3); flat stretches are not maxima
    sel = uncertainty_slice_sampling(pool, 3.0)
    # a:12 costs 1, b:40 1, a:30 1/3 (same volume); c:5 would cost 1 more (3.33 > 3): skipped;
    # the peaks are spent with 2/3 left: the next-best slices of a (flat 0.1; lowest index first), 5 apart
    assert sel.items == (SliceSelection("a", (0, 5, 12, 30)), SliceSelection("b", (40,)))
    assert sel.effort_slices == pytest.approx(3.0)
    assert uncertainty_slice_sampling(pool, 3.4).case_ids == ("a", "b", "c")
    top3 = uncertainty_slice_sampling(pool, 3.0, effort_model=EffortModel(further_slice=1.0))
    assert {(i.case_id, s) for i in top3.items for s in i.slices} == {("a", 12), ("b", 40), ("a", 30)}
    # already annotated slices and their neighbours are not proposed again
    done = [CaseUncertainty("a", n, curves["a"], annotated_slices=(14,))]
    again = uncertainty_slice_sampling(done, 1.0)
    assert again.slices_of("a") == (30,)


def test_uvs_picks_the_most_uncertain_volume():
    pool = [CaseUncertainty(f"v{i}", 20, volume_uncertainty=u) for i, u in enumerate([0.2, 0.7, 0.1, 0.5])]
    one = uncertainty_volume_sampling(pool, volume_effort(20))
    assert one.case_ids == ("v1",) and one.slices_of("v1") == tuple(range(20))
    assert uncertainty_volume_sampling(pool, 2 * volume_effort(20)).case_ids == ("v1", "v3")
    assert uncertainty_volume_sampling(pool, volume_effort(20), exclude_cases={"v1"}).case_ids == ("v3",)
    with pytest.raises(ValueError, match="volume_uncertainty"):
        uncertainty_volume_sampling([CaseUncertainty("x", 5)], 10.0)


def test_foreground_random_follows_the_foreground():
    n = 60
    fg = np.zeros(n)
    fg[20:25] = [1, 2, 50, 2, 1]
    pool = [CaseUncertainty("a", n, slice_foreground=fg), CaseUncertainty("b", n)]
    only_fg = foreground_random_sampling(pool, 1 + 4 / 3, seed=0, foreground_share=1.0)
    assert only_fg.case_ids == ("a",) and set(only_fg.slices_of("a")) == set(range(20, 25))
    # the heaviest slice is drawn first in most seeds; uniform draws (share 0) almost never hit it first
    first_fg = [foreground_random_sampling(pool, 1.0, seed=s, foreground_share=1.0).items[0].slices[0] for s in range(40)]
    assert first_fg.count(22) >= 30
    first_uniform = [foreground_random_sampling(pool, 1.0, seed=s, foreground_share=0.0).items[0] for s in range(40)]
    assert sum(i.case_id == "a" and i.slices[0] in range(20, 25) for i in first_uniform) <= 8
    # the default share mixes both: some picks are off the foreground
    mixed = foreground_random_sampling(pool, 20.0, seed=3)
    picks = [(i.case_id, s) for i in mixed.items for s in i.slices]
    assert any(c == "b" or s not in range(20, 25) for c, s in picks)


def test_registry_is_a_table_and_unknown_names_fail():
    assert set(STRATEGIES) == {"uss", "rss", "uvs", "rvs", "fg_random", "fg_random_33"}
    with pytest.raises(KeyError, match="known"):
        select("entropy_max", _pool(), 3.0)
    with pytest.raises(ValueError, match="twice"):
        select("rss", _pool() + _pool()[:1], 3.0)
    with pytest.raises(ValueError, match="budget"):
        select("rss", _pool(), -1.0)


# --------------------------------------------------------------------------- partial annotation


def test_annotated_voxels_for_slices():
    mask = annotated_voxels_for_slices((3, 4, 10), [2, 7])
    assert mask.shape == (3, 4, 10) and mask.sum() == 2 * 12
    assert mask[:, :, 2].all() and mask[:, :, 7].all() and not mask[:, :, 3].any()
    m0 = annotated_voxels_for_slices((3, 4, 10), [1], axis=0)
    assert m0[1].all() and m0.sum() == 40
    with pytest.raises(ValueError):
        annotated_voxels_for_slices((3, 4, 10), [10])


def _case(seed=0, shape=(10, 10, 12)):
    rng = np.random.default_rng(seed)
    image = rng.random(shape).astype(np.float32)
    label = rng.choice(np.array([0, 1, 5], np.uint8), size=shape)
    return TrainingCase("p", image, label, ("spleen", "liver"))


def _loss_and_grad(case: TrainingCase, logits0: torch.Tensor):
    logits = logits0.clone().requires_grad_(True)
    target = torch.from_numpy(one_hot_organs(case.label, TABLE))[None]
    weights = torch.from_numpy(case.organ_weights(TABLE))[None]
    mask = torch.from_numpy(case.annotated_voxels.astype(np.float32))[None, None]
    loss = masked_dice_bce_loss(logits, target, weights, mask)
    loss.backward()
    return float(loss.detach()), logits.grad.clone()


def test_masked_loss_ignores_unannotated_slices():
    case = _case()
    slices = (2, 7)
    partial = partial_training_case(case, slices)
    assert partial.label is case.label or np.shares_memory(partial.label, case.label)
    assert partial.annotated_voxels.sum() == 2 * 100
    logits0 = torch.randn((1, 2, 10, 10, 12), generator=torch.Generator().manual_seed(1))
    loss_a, grad_a = _loss_and_grad(partial, logits0)

    scrambled = np.random.default_rng(9).choice(np.array([0, 1, 5], np.uint8), size=case.label.shape)
    outside = ~partial.annotated_voxels
    relabelled = np.where(outside, scrambled, case.label).astype(np.uint8)
    assert (relabelled != case.label).sum() > 100
    other = partial_training_case(TrainingCase("p", case.image, relabelled, case.annotated_organs), slices)
    loss_b, grad_b = _loss_and_grad(other, logits0)
    assert loss_b == loss_a
    assert torch.equal(grad_b, grad_a)
    assert torch.all(grad_a[0, :, :, :, [0, 1, 3, 4, 5, 6, 8, 9, 10, 11]] == 0)

    # a change ON a selected slice does change the loss (the test can fail)
    inside = relabelled.copy()
    inside[:, :, 2] = np.where(case.label[:, :, 2] == 0, 5, 0)
    changed = partial_training_case(TrainingCase("p", case.image, inside, case.annotated_organs), slices)
    assert _loss_and_grad(changed, logits0)[0] != loss_a


def test_partial_case_intersects_existing_annotation_and_selection_cases():
    case = _case()
    first = partial_training_case(case, [2, 3, 4])
    second = partial_training_case(first, [4, 5])
    assert np.array_equal(second.annotated_voxels, annotated_voxels_for_slices(case.image.shape, [4]))
    assert case.annotated_voxels is None  # input untouched
    sel = Selection("uss", (SliceSelection("p", (1, 6)),), 4 / 3)
    (out,) = selection_training_cases({"p": case}, sel)
    assert np.array_equal(out.annotated_voxels, annotated_voxels_for_slices(case.image.shape, [1, 6]))
    whole = Selection("uvs", (SliceSelection("p", tuple(range(12))),), volume_effort(12))
    assert selection_training_cases({"p": case}, whole)[0] is case
    with pytest.raises(KeyError, match="q"):
        selection_training_cases({"p": case}, Selection("uss", (SliceSelection("q", (1,)),), 1.0))
