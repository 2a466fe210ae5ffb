"""Reassembly by label priority, provenance, the ensemble pseudo label and the kidney split."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from alqa_core.annotation.labelled.reassembly import REVISION_RULE, Revision, reassemble, select_revision
from alqa_core.ensemble.pseudo_labels import pseudo_label
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.kidney import remap_labels_splitting_kidney, split_kidney, split_kidney_values
from alqa_core.organs import DEFAULT_ORGAN_TABLE, ClassMap
from alqa_core.volume import LabelMap, SoftPrediction, quantize_probabilities

T = DEFAULT_ORGAN_TABLE
V = {name: T.value_of(name) for name in T.names}
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
SHAPE = (16, 4, 4)
WHEN = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)


def slabs(spec: dict[tuple[int, int], str]) -> np.ndarray:
    """A label array with organ slabs along i: {(start, stop): organ}."""
    out = np.zeros(SHAPE, dtype=np.uint8)
    for (a, b), organ in spec.items():
        out[a:b] = V[organ]
    return out


expected = slabs  # the hand-written answer, in the same slab notation


PSEUDO = slabs({(0, 6): "liver", (6, 9): "stomach", (9, 11): "spleen", (11, 13): "kidney_right", (13, 14): "gallbladder"})
# the dataset annotates liver and gallbladder; it also carries an undeclared stomach value (ignored)
ORIGINAL = slabs({(0, 4): "liver", (6, 7): "stomach"})
ORIGINAL_ORGANS = ("liver", "gallbladder")
# the annotator revised stomach and spleen; stomach at i=3 collides with the original liver
REVISED = slabs({(3, 4): "stomach", (5, 9): "stomach", (10, 12): "spleen"})


def revision(label=REVISED, sid="sub-1", who="dr_a", when=WHEN, kind="revised", organs=("stomach", "spleen")):
    lm = None if label is None else LabelMap(label, AFFINE)
    return Revision(lm, sid, who, when, kind, organs)


def test_priority_original_over_revised_over_pseudo():
    inputs = [PSEUDO.copy(), ORIGINAL.copy(), REVISED.copy()]
    out = reassemble("case_1", T, LabelMap(PSEUDO, AFFINE), LabelMap(ORIGINAL, AFFINE), ORIGINAL_ORGANS, revision())
    want = expected({
        (0, 4): "liver",        # original; wins over the revised stomach at i=3
        # i=4: the pseudo liver is dropped (the original is authoritative for liver), nothing else there
        (5, 9): "stomach",      # revised, over the pseudo liver at i=5
        # i=9: the pseudo spleen is replaced by the revised spleen, which is absent there
        (10, 12): "spleen",     # revised, over the pseudo right kidney at i=11
        (12, 13): "kidney_right",  # pseudo: nobody else labels kidneys
        # i=13: pseudo gallbladder dropped: the original annotates gallbladder and has none
    })
    np.testing.assert_array_equal(out.label.array, want)
    np.testing.assert_array_equal(out.label.affine, AFFINE)
    prov = {p.organ: p for p in out.provenance}
    assert [p.organ for p in out.provenance] == list(T.names)
    assert prov["liver"].source == "original" and prov["gallbladder"].source == "original"
    assert prov["gallbladder"].voxels == 0 and prov["liver"].voxels == 4 * 16
    assert prov["stomach"].source == "revised" and prov["spleen"].source == "revised"
    assert (prov["stomach"].submission_id, prov["stomach"].annotator, prov["stomach"].submitted_at) == ("sub-1", "dr_a", WHEN)
    assert prov["stomach"].voxels == 4 * 16 and prov["spleen"].voxels == 2 * 16
    assert prov["kidney_right"].source == "pseudo" and prov["kidney_right"].annotator is None
    assert prov["pancreas"].source == "pseudo" and prov["pancreas"].voxels == 0
    for before, after in zip(inputs, [PSEUDO, ORIGINAL, REVISED]):
        np.testing.assert_array_equal(before, after)  # inputs untouched


def test_confirmation_keeps_pseudo_voxels_with_who_and_when():
    conf = revision(label=None, sid="sub-9", who="dr_b", kind="confirmed", organs=None)
    out = reassemble("case_2", T, LabelMap(PSEUDO, AFFINE), LabelMap(ORIGINAL, AFFINE), ORIGINAL_ORGANS, conf)
    want = expected({(0, 4): "liver", (6, 9): "stomach", (9, 11): "spleen", (11, 13): "kidney_right"})
    np.testing.assert_array_equal(out.label.array, want)
    prov = {p.organ: p for p in out.provenance}
    assert prov["liver"].source == "original" and prov["liver"].annotator is None
    for organ in ("stomach", "spleen", "kidney_right", "pancreas"):
        p = prov[organ]
        assert (p.source, p.submission_id, p.annotator, p.submitted_at) == ("confirmed", "sub-9", "dr_b", WHEN)
    assert out.source_of("kidney_right") == "confirmed"


def test_no_original_no_revision_is_the_pseudo_label():
    out = reassemble("c", T, LabelMap(PSEUDO, AFFINE), None, (), None)
    np.testing.assert_array_equal(out.label.array, PSEUDO)
    assert {p.source for p in out.provenance} == {"pseudo"}


def test_latest_accepted_wins_whatever_the_order():
    early = revision(sid="sub-a", who="dr_a", when=WHEN)
    late = revision(label=slabs({(9, 13): "spleen"}), sid="sub-b", who="dr_b", when=WHEN + timedelta(hours=1))
    assert select_revision([early, late]) is late and select_revision([late, early]) is late
    # equal times: the larger submission_id wins
    tie_a = revision(sid="sub-x", when=WHEN)
    tie_b = revision(sid="sub-y", when=WHEN)
    assert select_revision([tie_b, tie_a]) is tie_b and select_revision([tie_a, tie_b]) is tie_b
    # a later instant written in another timezone is still later
    other_tz = revision(sid="sub-0", when=(WHEN + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5))))
    assert select_revision([early, other_tz]) is other_tz

    out = reassemble("c", T, LabelMap(PSEUDO, AFFINE), None, (), [early, late])
    prov = {p.organ: p for p in out.provenance}
    assert (prov["spleen"].submission_id, prov["spleen"].annotator) == ("sub-b", "dr_b")
    assert prov["spleen"].superseded == ("sub-a",)
    assert prov["spleen"].voxels == 4 * 16  # dr_b's spleen, painted over the pseudo right kidney
    assert prov["kidney_right"].voxels == 0
    assert prov["stomach"].source == "revised" and prov["stomach"].voxels == 0  # dr_b drew no stomach
    assert prov["liver"].superseded == () and prov["liver"].submission_id is None
    rec = {r["organ"]: r for r in out.to_records()}
    assert rec["spleen"]["superseded"] == "sub-a" and rec["spleen"]["revision_rule"] == REVISION_RULE
    assert rec["liver"]["superseded"] == "" and rec["liver"]["source"] == "pseudo"
    assert rec["spleen"]["volume_ml"] == pytest.approx(64 * 1.5 * 1.5 * 3.0 / 1000)
    assert set(rec["spleen"]) >= {"case_id", "organ", "source", "submission_id", "annotator", "submitted_at", "voxels"}


def test_mismatched_grids_raise():
    pseudo = LabelMap(PSEUDO, AFFINE)
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    with pytest.raises(AlqaInputError, match="case_3.*original"):
        reassemble("case_3", T, pseudo, LabelMap(ORIGINAL, shifted), ORIGINAL_ORGANS, None)
    small = np.zeros((16, 4, 3), dtype=np.uint8)
    with pytest.raises(AlqaInputError, match="sub-1"):
        reassemble("case_3", T, pseudo, None, (), revision(label=small))
    with pytest.raises(AlqaInputError, match="no label"):
        reassemble("case_3", T, pseudo, None, ("liver",), None)
    with pytest.raises(AlqaInputError, match="pancreatic_duct"):
        reassemble("case_3", T, pseudo, None, (), revision(organs=("pancreatic_duct",)))


def test_revision_validation():
    with pytest.raises(AlqaInputError, match="timezone"):
        revision(when=datetime(2025, 3, 1, 9, 30))
    with pytest.raises(AlqaInputError, match="needs a label"):
        revision(label=None, kind="revised")
    with pytest.raises(AlqaInputError, match="kind"):
        revision(kind="approved")


# --------------------------------------------------------------------------
# Pseudo label from the ensemble mean
# --------------------------------------------------------------------------


def member(probs: dict[str, list[float]], name: str, affine=np.eye(4)) -> SoftPrediction:
    arr = np.stack([np.asarray(p, dtype=np.float32).reshape(len(p), 1, 1) for p in probs.values()])
    return SoftPrediction(quantize_probabilities(arr), affine, tuple(probs), member=name)


def test_pseudo_label_is_argmax_of_the_mean_then_threshold():
    # voxel 0: spleen is one member's top score, but liver has the higher MEAN (0.6 > 0.47) -> liver
    # voxel 1: every mean below 0.5 (liver 0.383) -> background
    # voxel 2: stomach mean (0.7 + 0.5 + 0.5) / 3 = 0.567 -> stomach
    # voxel 3: nothing anywhere -> background
    m1 = member({"spleen": [1.0, 0.4, 0.0, 0], "liver": [0.6, 0.4, 0.1, 0], "stomach": [0.0, 0.0, 0.7, 0]}, "unet")
    # another channel order on purpose
    m2 = member({"stomach": [0.0, 0.1, 0.5, 0], "liver": [0.6, 0.45, 0.1, 0], "spleen": [0.2, 0.3, 0.0, 0]}, "segresnet")
    m3 = member({"liver": [0.6, 0.3, 0.2, 0], "spleen": [0.2, 0.2, 0.0, 0], "stomach": [0.0, 0.0, 0.5, 0]}, "swinunetr")
    out = pseudo_label([m1, m2, m3], T)
    np.testing.assert_array_equal(out.array[:, 0, 0], [V["liver"], 0, V["stomach"], 0])
    assert out.array.dtype == np.uint8 and out.shape == (4, 1, 1)
    lower = pseudo_label([m1, m2, m3], T, threshold=0.35)
    np.testing.assert_array_equal(lower.array[:, 0, 0], [V["liver"], V["liver"], V["stomach"], 0])


def test_pseudo_label_respects_member_coverage():
    # the external member predicts only the liver; its spleen channel is meaningless
    full = member({"spleen": [0.6, 0.0], "liver": [0.55, 0.0]}, "unet")
    external = member({"spleen": [1.0, 1.0], "liver": [0.9, 0.0]}, "totalseg")
    # covered: spleen mean 0.6 (unet only), liver (0.55 + 0.9) / 2 = 0.725 -> liver; voxel 1 -> background
    out = pseudo_label([full, external], T, covered=[None, ("liver",)])
    np.testing.assert_array_equal(out.array[:, 0, 0], [V["liver"], 0])
    # without coverage the junk spleen channel would win
    naive = pseudo_label([full, external], T)
    np.testing.assert_array_equal(naive.array[:, 0, 0], [V["spleen"], V["spleen"]])
    # an organ only the external member has is averaged over it alone
    only_ext = member({"gallbladder": [0.0, 0.8]}, "ext2")
    out2 = pseudo_label([full, only_ext], T)
    np.testing.assert_array_equal(out2.array[:, 0, 0], [V["spleen"], V["gallbladder"]])
    with pytest.raises(AlqaInputError, match="no channel"):
        pseudo_label([full, external], T, covered=[None, ("pancreas",)])


def test_pseudo_label_needs_one_grid():
    a = member({"liver": [0.9, 0.1]}, "a")
    b = member({"liver": [0.9, 0.1]}, "b", affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(AlqaInputError, match="member 'b'"):
        pseudo_label([a, b], T)
    with pytest.raises(AlqaInputError):
        pseudo_label([], T)


# --------------------------------------------------------------------------
# Generic kidney -> right / left
# --------------------------------------------------------------------------

KSHAPE = (24, 8, 8)


def two_kidneys() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A kidney at low i (larger, 5 slices) and one at high i (4 slices), plus a fragment of the first."""
    low = np.zeros(KSHAPE, dtype=bool)
    low[2:7, 2:6, 2:6] = True
    low[2:4, 2:4, 7:8] = True  # a detached fragment beside the low-i kidney
    high = np.zeros(KSHAPE, dtype=bool)
    high[16:20, 2:6, 2:6] = True
    return low | high, low, high


def test_split_kidney_ras_affine():
    mask, low, high = two_kidneys()
    # RAS voxel axes: i grows towards the patient's right (world x = 2 i - 20)
    affine = np.array([[2.0, 0, 0, -20], [0, 2, 0, -30], [0, 0, 3, 10], [0, 0, 0, 1]])
    right, left = split_kidney(mask, affine)
    np.testing.assert_array_equal(right, high)
    np.testing.assert_array_equal(left, low)  # the fragment follows its side
    assert not (right & left).any() and ((right | left) == mask).all()


def test_split_kidney_lps_affine():
    mask, low, high = two_kidneys()
    # LPS voxel axes (as DICOM stores them): i grows towards the patient's LEFT (world x = -2 i + 20)
    affine = np.array([[-2.0, 0, 0, 20], [0, -2, 0, 30], [0, 0, 3, 10], [0, 0, 0, 1]])
    right, left = split_kidney(mask, affine)
    np.testing.assert_array_equal(right, low)
    np.testing.assert_array_equal(left, high)


def test_split_kidney_uses_world_x_not_the_first_array_axis():
    mask, low, high = two_kidneys()
    # axis j maps to world -x, axis i to world y: left/right is decided by j only
    mask_t = np.transpose(mask, (1, 0, 2))  # now the kidneys are separated along j
    affine = np.array([[0, -1.5, 0, 0], [1.5, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]])
    right, left = split_kidney(mask_t, affine)
    np.testing.assert_array_equal(right, np.transpose(low, (1, 0, 2)))
    np.testing.assert_array_equal(left, np.transpose(high, (1, 0, 2)))


def test_split_kidney_horseshoe_is_cut_at_the_body_midline():
    horseshoe = np.zeros(KSHAPE, dtype=bool)
    horseshoe[6:18, 3:5, 3:5] = True  # one component crossing the middle
    body = np.zeros(KSHAPE, dtype=bool)
    body[2:22] = True  # body centred on i = 11.5
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    right, left = split_kidney(horseshoe, affine, body_mask=body)
    assert right[12:18, 3:5, 3:5].all() and left[6:12, 3:5, 3:5].all()
    np.testing.assert_array_equal(np.flatnonzero(right.any(axis=(1, 2))), np.arange(12, 18))
    np.testing.assert_array_equal(np.flatnonzero(left.any(axis=(1, 2))), np.arange(6, 12))
    # a single kidney wholly on one side of the body midline goes there whole
    single = np.zeros(KSHAPE, dtype=bool)
    single[14:19, 2:6, 2:6] = True
    r, l = split_kidney(single, affine, body_mask=body)
    assert r.sum() == single.sum() and not l.any()


def test_label_map_with_a_generic_kidney_value():
    mask, low, high = two_kidneys()
    src = np.zeros(KSHAPE, dtype=np.int16)
    src[mask] = 3  # "kidney"
    src[10:14, 2:6, 2:6] = 7  # "liver" in the source numbering
    affine = np.array([[2.0, 0, 0, -20], [0, 2, 0, -30], [0, 0, 3, 10], [0, 0, 0, 1]])
    label = LabelMap(src, affine, class_map_name="my_dataset")
    out = remap_labels_splitting_kidney(label, ClassMap("my_dataset", {3: "kidney", 7: "liver"}), T)
    assert out.class_map_name == "organ_table"
    assert (out.array[high] == V["kidney_right"]).all() and (out.array[low] == V["kidney_left"]).all()
    assert (out.array[10:14, 2:6, 2:6] == V["liver"]).all()
    assert np.count_nonzero(out.array) == np.count_nonzero(src)
    np.testing.assert_array_equal(label.array[mask], 3)  # input untouched
    # the array-level form
    arr = split_kidney_values(src, affine, kidney_value=3, right_value=20, left_value=21)
    assert (arr[high] == 20).all() and (arr[low] == 21).all() and (arr[10:14, 2:6, 2:6] == 7).all()
