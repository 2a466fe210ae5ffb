"""Error-model ensembles: each mode makes the error it claims, members are the platform's soft predictions, rates and shares hold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import pdist

from alqa_core.attention.compute import attention_from_predictions
from alqa_core.config.sections import AttentionConfig
from alqa_core.ensemble.pseudo_labels import pseudo_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as TABLE
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.simulator.error_model import modes
from alqa_core.simulator.error_model.cases import crop_in_plane, ground_truth, label_sources
from alqa_core.simulator.error_model.members import ErrorModelConfig, failure_cases, make_members, soft_channel
from alqa_core.volume import LabelMap, SoftPrediction

SPACING = (6.0, 6.0, 6.0)
#: no errors and no boundary noise: members equal the truth's soft outputs
QUIET = dict(minor_rates=(), shared_boundary_vox=0.0, member_boundary_vox=0.0)
CUBE = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module")
def truth() -> LabelMap:
    return crop_in_plane(generate_case(PhantomSpec(seed=11, spacing_mm=SPACING)).labels)


@pytest.fixture(scope="module")
def masks(truth):
    arr = np.asarray(truth.array)
    return {o.name: arr == o.value for o in TABLE.organs}


def _distance_vox(mask):
    """Voxel distance of every voxel to ``mask`` (0 on it)."""
    return ndimage.distance_transform_edt(~mask)


# --------------------------------------------------------------------------- the modes' geometry


def test_boundary_shift_moves_a_surface_patch_by_one_or_two_voxels(masks):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        result = modes.boundary_shift("liver", masks, SPACING, rng, major=False)
        (change,) = result.changes
        liver = masks["liver"]
        assert change.region.any()
        if change.value:  # grown outward: new voxels within 2 voxels outside the organ
            assert not (change.region & liver).any()
            assert _distance_vox(liver)[change.region].max() <= 2.0 + 1e-6
        else:  # shrunk inward: removed voxels within 2 voxels of the outside
            assert (change.region <= liver).all()
            assert _distance_vox(~liver)[change.region].max() <= 2.0 + 1e-6
        seen.add(change.value)
        # a patch, not the whole surface: it fits in a ball of the largest patch radius
        assert pdist(np.argwhere(change.region) * np.asarray(SPACING)).max(initial=0.0) <= 2 * modes.SHIFT_PATCH_MM[1] + 1e-6
    assert seen == {True, False}


@pytest.mark.parametrize("major, low, high", [(False, 0.15**3 / 2, 0.3**3 * 1.6), (True, 0.45**3 / 2, 0.7**3 * 1.6)])
def test_hole_removes_a_ball_inside_the_organ(masks, major, low, high):
    rng = np.random.default_rng(1)
    liver = masks["liver"]
    for _ in range(5):
        (change,) = modes.hole("liver", masks, SPACING, rng, major).changes
        assert not change.value and (change.region <= liver).all()
        share = change.region.sum() / liver.sum()
        assert low <= share <= high, share
        # one blob: a single connected component
        assert ndimage.label(change.region)[1] == 1


@pytest.mark.parametrize("major, low, high", [(False, 0.05, 0.15), (True, 0.65, 0.9)])
def test_truncation_cuts_one_end_of_the_organ(masks, major, low, high):
    rng = np.random.default_rng(2)
    spleen = masks["spleen"]
    ks = np.flatnonzero(spleen.any(axis=(0, 1)))
    for _ in range(6):
        (change,) = modes.truncation("spleen", masks, SPACING, rng, major).changes
        cut = np.flatnonzero(change.region.any(axis=(0, 1)))
        # whole slices of the organ, from one end, contiguous
        assert cut.size and (cut[0] == ks[0] or cut[-1] == ks[-1]) and np.all(np.diff(cut) == 1)
        assert np.array_equal(change.region[:, :, cut], spleen[:, :, cut])
        assert low - 1 / ks.size <= cut.size / ks.size <= high + 1 / ks.size


def test_fp_blob_lies_in_a_neighbouring_organ_which_loses_it(masks):
    rng = np.random.default_rng(3)
    for organ in ("pancreas", "kidney_right", "gallbladder"):
        result = modes.fp_blob(organ, masks, SPACING, rng, major=False)
        add, remove = result.changes
        host = result.other
        assert (add.organ, add.value, remove.organ, remove.value) == (organ, True, host, False)
        assert host != organ and (add.region <= masks[host]).all() and add.region.any()
        # the host touches the organ (within NEIGHBOUR_MM), and the blob sits near the contact
        dist_mm = ndimage.distance_transform_edt(~masks[organ], sampling=SPACING)
        assert dist_mm[masks[host]].min() <= modes.NEIGHBOUR_MM
        assert dist_mm[add.region].min() <= 2 * modes.NEIGHBOUR_MM


def test_confusions_swap_kidneys_whole_and_spleen_liver_where_they_touch(masks):
    rng = np.random.default_rng(4)
    assert modes.confusion("kidney_left", masks, SPACING, rng, major=False) is None  # kidneys are confused whole: a failure
    lost, gained = modes.confusion("kidney_left", masks, SPACING, rng, major=True).changes
    assert (lost.organ, gained.organ) == ("kidney_left", "kidney_right")
    assert np.array_equal(lost.region, masks["kidney_left"]) and gained.value
    lost, gained = modes.confusion("spleen", masks, SPACING, rng, major=False).changes
    assert (lost.organ, gained.organ, gained.value) == ("spleen", "liver", True)
    dist_mm = ndimage.distance_transform_edt(~masks["liver"], sampling=SPACING)
    assert (lost.region <= masks["spleen"]).all() and lost.region.any()
    assert dist_mm[lost.region].max() <= dist_mm[masks["spleen"]].min() + 12.0 + 1e-6
    assert lost.region.sum() < masks["spleen"].sum()  # only where they touch
    assert modes.confusion("pancreas", masks, SPACING, rng, major=True) is None


@pytest.mark.parametrize("mode, organ", [("missed", "pancreas"), ("confusion", "kidney_right"), ("confusion", "spleen"),
                                         ("truncation", "liver"), ("truncation", "spleen"), ("fp_blob", "gallbladder")])
def test_a_major_error_is_a_failure_an_organ_below_dice_half(masks, mode, organ):
    rng = np.random.default_rng(6)
    for _ in range(3):
        result = modes.MODE_FUNCTIONS[mode](organ, masks, SPACING, rng, major=True)
        predicted = {o: m.copy() for o, m in masks.items()}
        for change in result.changes:
            predicted[change.organ][change.region] = change.value
        dice = {o: 2 * (predicted[o] & masks[o]).sum() / max(predicted[o].sum() + masks[o].sum(), 1) for o in masks if masks[o].any()}
        assert min(dice.values()) < 0.5, dice
        minor = modes.MODE_FUNCTIONS[mode](organ, masks, SPACING, rng, major=False)
        if minor is not None:  # a minor error of the same mode is not
            predicted = {o: m.copy() for o, m in masks.items()}
            for change in minor.changes:
                predicted[change.organ][change.region] = change.value
            assert min(2 * (predicted[o] & masks[o]).sum() / (predicted[o].sum() + masks[o].sum()) for o in masks if masks[o].any()) > 0.5


def test_a_major_blob_comes_only_from_a_small_organ(masks):
    assert modes.fp_blob("pancreas", masks, SPACING, np.random.default_rng(0), major=True) is None
    assert "pancreas" not in modes.applicable_organs("fp_blob", masks, True, SPACING)
    assert "gallbladder" in modes.applicable_organs("fp_blob", masks, True, SPACING)


def test_missed_removes_the_whole_organ_and_only_as_a_failure(masks):
    rng = np.random.default_rng(5)
    assert modes.missed("pancreas", masks, SPACING, rng, major=False) is None
    (change,) = modes.missed("pancreas", masks, SPACING, rng, major=True).changes
    assert np.array_equal(change.region, masks["pancreas"]) and not change.value


# --------------------------------------------------------------------------- members


def test_members_are_soft_predictions_whose_boundaries_are_unsure(truth, masks):
    em = make_members(truth, TABLE, ErrorModelConfig(n_members=3, **QUIET), seed=0)
    assert len(em.members) == 3 and not em.events
    for m in em.members:
        assert isinstance(m, SoftPrediction) and m.array.dtype == np.uint8 and m.organs == TABLE.names
        assert m.grid.matches(truth.grid)
    a = em.members[0].array
    assert all(np.array_equal(a, m.array) for m in em.members[1:])  # no error, no noise: identical members
    for c, organ in enumerate(TABLE.names):
        np.testing.assert_array_equal(a[c] >= 128, masks[organ])  # p > 0.5 exactly on the organ
        if masks[organ].any():
            surface = masks[organ] & ~ndimage.binary_erosion(masks[organ])
            assert np.median(a[c][surface]) < 250  # the boundary is unsure...
            core = ndimage.binary_erosion(masks[organ], structure=CUBE)  # every neighbour inside: 1.5 voxels deep or more
            assert not core.any() or a[c][core].min() >= 254  # ...the inside is sure
    pseudo = pseudo_label(em.members, TABLE)
    np.testing.assert_array_equal(pseudo.array, truth.array)


def test_a_shared_error_is_made_identically_by_every_member(truth):
    cfg = ErrorModelConfig(n_members=3, minor_rates=(("hole", 2.0), ("fp_blob", 2.0)), shared_share=1.0,
                           shared_boundary_vox=0.0, member_boundary_vox=0.0)
    em = make_members(truth, TABLE, cfg, seed=3)
    assert em.events and all(e.shared and e.members == (0, 1, 2) and set(e.confidences) == {1.0} for e in em.events)
    first = em.members[0].array
    assert all(np.array_equal(first, m.array) for m in em.members[1:])  # no disagreement: Eq. 1 (std) is 0 everywhere
    att = attention_from_predictions(em.members, config=AttentionConfig(uncertainty_threshold=0.7))  # entropy off: only Eq. 1 and 3
    assert att.size.attention_ml == 0.0
    for event in em.events:  # every wrong voxel of the event is a voxel every member gets wrong
        for organ, _, idx in event.wrong:
            assert em.shared_mask(TABLE.channel_of(organ)).ravel()[idx].all()


def test_a_member_error_is_unsure_and_disagreed_on(truth, masks):
    cfg = ErrorModelConfig(n_members=3, minor_rates=(), failure_modes=(("missed", 1.0),), failure_errors=(1, 1), shared_share=0.0,
                           major_confidence=(8.0, 2.0), shared_boundary_vox=0.0, member_boundary_vox=0.0)
    em = make_members(truth, TABLE, cfg, seed=4, failure=True, focus=("kidney_right",))
    (event,) = em.events
    assert (event.mode, event.organ, event.major, event.shared) == ("missed", "kidney_right", True, False)
    assert len(event.members) == 2  # a majority of 3, not all
    c = TABLE.channel_of("kidney_right")
    core = ndimage.binary_erosion(masks["kidney_right"], structure=CUBE)
    for m, member in enumerate(em.members):
        values = member.array[c][core]
        if m in event.members:
            conf = event.confidences[event.members.index(m)]
            np.testing.assert_allclose(values, np.rint(255 * (1 - conf)), atol=1)  # p = 1 - c: unsure, wrong side
        else:
            assert values.min() >= 254
    att = attention_from_predictions(em.members, config=AttentionConfig(cleaning_radius_mm=0.0))
    assert att.region("kidney_right")[core].all()  # inconsistency covers the organ the majority missed
    assert not em.shared_mask(c)[core].any()


def test_members_disagree_along_boundaries_with_boundary_noise(truth, masks):
    em = make_members(truth, TABLE, ErrorModelConfig(minor_rates=()), seed=5)
    high = [m.array >= 128 for m in em.members]
    differ = np.logical_xor(high[0], high[1])
    assert differ.any()
    for c, organ in enumerate(TABLE.names):  # noise moves an organ's boundary, never its inside or the far background
        near = ndimage.binary_dilation(masks[organ], iterations=3) & ~ndimage.binary_erosion(masks[organ], iterations=3)
        assert (differ[c] <= near).all(), organ
    pseudo = np.asarray(pseudo_label(em.members, TABLE).array)
    liver = TABLE.value_of("liver")
    dice = 2 * ((pseudo == liver) & masks["liver"]).sum() / ((pseudo == liver).sum() + masks["liver"].sum())
    assert 0.85 < dice < 1.0


def test_soft_channel_confidence_squeezes_probabilities():
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[3:9, 3:9, 3:9] = True
    sure = soft_channel(mask, None, (2.0, 2.0, 2.0), tau_mm=0.5)
    np.testing.assert_array_equal(sure >= 128, mask)
    conf = np.full(mask.shape, 0.75, dtype=np.float32)
    squeezed = soft_channel(mask, conf, (2.0, 2.0, 2.0), tau_mm=0.5)
    assert squeezed[5, 5, 5] == np.rint(255 * 0.75) and squeezed[0, 0, 0] == np.rint(255 * 0.25)


# --------------------------------------------------------------------------- rates and shares


def _blocks() -> LabelMap:
    """A small two-organ volume (liver and spleen side by side) for counting events cheaply."""
    arr = np.zeros((24, 20, 16), dtype=np.uint8)
    arr[3:12, 4:16, 3:13] = TABLE.value_of("liver")
    arr[12:20, 6:14, 4:12] = TABLE.value_of("spleen")
    return LabelMap(arr, np.diag([4.0, 4.0, 4.0, 1.0]))


def test_minor_error_rates_are_expected_counts_per_case():
    cfg = ErrorModelConfig(minor_rates=(("hole", 0.5), ("truncation", 1.5)), shared_boundary_vox=0.0, member_boundary_vox=0.0)
    counts = {"hole": [], "truncation": []}
    for seed in range(200):
        em = make_members(_blocks(), TABLE, cfg, seed=seed)
        for mode in counts:
            counts[mode].append(sum(e.mode == mode for e in em.events))
        assert not any(e.major for e in em.events)
    assert np.mean(counts["hole"]) == pytest.approx(0.5, abs=0.12)
    assert np.mean(counts["truncation"]) == pytest.approx(1.5, abs=0.2)
    assert np.var(counts["truncation"]) == pytest.approx(1.5, abs=0.45)  # Poisson: variance = mean


def test_failure_share_is_exact_and_only_among_eligible_cases():
    eligible = np.arange(400) % 5 != 0
    picked = failure_cases(400, 0.05, seed=2, eligible=eligible)
    assert picked.sum() == 20 and not (picked & ~eligible).any()
    assert not np.array_equal(picked, failure_cases(400, 0.05, seed=3, eligible=eligible))
    cfg = ErrorModelConfig(minor_rates=(), failure_errors=(2, 2), shared_boundary_vox=0.0, member_boundary_vox=0.0)
    em = make_members(_blocks(), TABLE, cfg, seed=1, failure=True, focus=("spleen",))
    assert em.failure_drawn and sum(e.major for e in em.events) == 2
    assert all(e.organ == "spleen" for e in em.events if e.mode != "confusion")


def test_config_refuses_nonsense():
    from alqa_core.errors import AlqaInputError

    for bad in (dict(n_members=1), dict(failure_share=1.5), dict(minor_rates=(("missed", 1.0),)), dict(failure_errors=(2, 1)),
                dict(boundary_softness_vox=0.0)):
        with pytest.raises(AlqaInputError):
            ErrorModelConfig(**bad)


def test_error_model_runs_on_the_real_ct_labels(real_ct_dir):
    (source,) = label_sources([real_ct_dir / "totalsegmentator_v2_labels.nii.gz"], 1, "total")
    gt = ground_truth(source, TABLE)
    present = {TABLE.name_of(int(v)) for v in np.unique(np.asarray(gt.array)) if v}
    assert {"liver", "spleen", "stomach", "aorta"} <= present
    cfg = ErrorModelConfig(minor_rates=(("boundary_shift", 1.0), ("fp_blob", 1.0)), shared_share=0.0)
    em = make_members(gt, TABLE, cfg, seed=0, failure=True, focus=tuple(sorted(present)))
    assert all(m.grid.matches(gt.grid) for m in em.members)
    assert any(e.major for e in em.events)
    changed = [e for e in em.events if e.n_voxels > 0]
    assert changed
    # an error every member does not make shows up as disagreement (Eq. 1) where it changed the prediction
    high = np.stack([m.array >= 128 for m in em.members])
    disagree = high.any(axis=0) & ~high.all(axis=0)
    event = next(e for e in changed if not e.shared)
    organ, _, idx = event.wrong[0]
    assert disagree[TABLE.channel_of(organ)].ravel()[idx].mean() > 0.5
