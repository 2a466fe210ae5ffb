"""Annotator effort accounting: minutes, per-organ corrections, catalog rows, summaries per round and annotator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.labelled.effort import EFFORT_COLUMNS, effort_records, organ_corrections, submission_effort
from alqa_core.annotation.labelled.effort_summary import round_savings, summarize_effort
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.evaluation.segmentation import mask_metrics
from alqa_core.organs import OrganTable
from alqa_core.volume import LabelMap

TABLE = OrganTable.from_pairs([(1, "spleen"), (2, "kidney_right"), (5, "liver")])
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])  # 10 mm^3 = 0.01 mL per voxel
SHAPE = (4, 5, 6)
ML = 0.01


def _pseudo() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[0:2] = 5  # liver: 60 voxels
    lab[3, 0:2, 0:3] = 1  # spleen: 6 voxels
    return lab


def _revised() -> np.ndarray:
    lab = _pseudo()
    lab[1, 4, :] = 0  # liver -6
    lab[2, 0, 0:4] = 5  # liver +4
    lab[3, 4, 0:3] = 2  # kidney_right +3 (absent in the pseudo label)
    return lab


def _label(arr) -> LabelMap:
    return LabelMap(arr, AFFINE)


def _effort(sub_id, case_id, annotator, rnd, created, submitted, kind, revised=None, pseudo=None):
    return submission_effort(
        sub_id, case_id, annotator, rnd, created, submitted, kind,
        _label(_pseudo() if pseudo is None else pseudo), None if revised is None else _label(revised), TABLE,
    )


def test_revision_minutes_dice_and_changed_voxels_are_exact():
    e = _effort("s1", "c1", "dr_a", 0, "2026-01-05T09:00:00+00:00", "2026-01-05T09:42:30+00:00", "revised", _revised())
    assert e.minutes == 42.5
    by = {c.organ: c for c in e.per_organ}
    assert [c.organ for c in e.per_organ] == ["spleen", "kidney_right", "liver"]
    liver = by["liver"]
    assert liver.dice == pytest.approx(2 * 54 / (60 + 58))
    assert liver.changed_voxels == 10 and liver.changed_ml == pytest.approx(10 * ML)
    assert liver.pseudo_ml == pytest.approx(60 * ML) and liver.revised_ml == pytest.approx(58 * ML)
    assert (by["spleen"].dice, by["spleen"].changed_voxels) == (1.0, 0)
    kidney = by["kidney_right"]
    assert (kidney.dice, kidney.changed_voxels, kidney.pseudo_ml) == (0.0, 3, 0.0)
    assert e.changed_voxels == 13 and not e.unchanged
    # the same Dice as the metrics module
    ref = mask_metrics(_pseudo() == 5, _revised() == 5, (2.0, 2.0, 2.5))
    assert liver.dice == pytest.approx(ref.dice)


def test_confirmation_is_a_zero_correction_and_timezones_count():
    e = _effort("s2", "c2", "dr_b", 0, "2026-01-05T09:00:00+00:00", "2026-01-05T11:15:00+01:00", "confirmed")
    assert e.minutes == 75.0
    assert e.unchanged and e.changed_voxels == 0
    for c in e.per_organ:
        assert c.dice == 1.0 and c.changed_voxels == 0 and c.changed_ml == 0.0 and c.revised_ml == c.pseudo_ml
    assert {c.organ: c.pseudo_ml for c in e.per_organ}["liver"] == pytest.approx(60 * ML)
    only = organ_corrections(_label(_pseudo()), None, TABLE, organs=["liver"])
    assert [c.organ for c in only] == ["liver"]


def test_bad_submissions_fail_clearly():
    created, later = "2026-01-05T09:00:00+00:00", "2026-01-05T10:00:00+00:00"
    with pytest.raises(AlqaInputError, match="s9.*timezone"):
        _effort("s9", "c1", "a", 0, "2026-01-05T09:00:00", later, "confirmed")
    with pytest.raises(AlqaInputError, match="before its work package"):
        _effort("s9", "c1", "a", 0, later, created, "confirmed")
    with pytest.raises(AlqaInputError, match="ISO"):
        _effort("s9", "c1", "a", 0, "yesterday", later, "confirmed")
    with pytest.raises(ValueError, match="confirmation"):
        _effort("s9", "c1", "a", 0, created, later, "confirmed", _revised())
    with pytest.raises(ValueError, match="revision"):
        _effort("s9", "c1", "a", 0, created, later, "revised")
    shifted = LabelMap(_revised(), np.diag([2.0, 2.0, 3.0, 1.0]))
    with pytest.raises(AlqaInputError, match="grid"):
        submission_effort("s9", "c1", "a", 0, created, later, "revised", _label(_pseudo()), shifted, TABLE)


def _campaign() -> list:
    t0 = "2026-01-05T09:00:00+00:00"
    t1 = "2026-01-12T09:00:00+00:00"
    liver_fix = _pseudo()
    liver_fix[2, 0, 0:4] = 5  # +4 liver voxels only
    return [
        _effort("s1", "c1", "dr_a", 0, t0, "2026-01-05T09:42:30+00:00", "revised", _revised()),
        _effort("s2", "c2", "dr_b", 0, t0, "2026-01-05T11:15:00+01:00", "confirmed"),
        # round 1: a revision that changes nothing, and a case revised then confirmed
        _effort("s3", "c3", "dr_a", 1, t1, "2026-01-12T09:30:00+00:00", "revised", _pseudo()),
        _effort("s4", "c4", "dr_a", 1, t1, "2026-01-12T09:10:00+00:00", "revised", liver_fix),
        _effort("s5", "c4", "dr_a", 1, t1, "2026-01-12T09:20:00+00:00", "confirmed"),
    ]


def test_effort_records_one_row_per_submission_and_organ_through_the_catalog(tmp_path):
    efforts = _campaign()
    frame = effort_records(efforts)
    assert tuple(frame.columns) == EFFORT_COLUMNS
    assert len(frame) == len(efforts) * len(TABLE)
    assert str(frame["submitted_at"].dt.tz) == "UTC"
    assert frame.loc[frame.submission_id == "s2", "submitted_at"].iloc[0] == pd.Timestamp("2026-01-05T10:15:00Z")
    catalog = Catalog(tmp_path / "catalog")
    for e in efforts:
        catalog.write("effort", e.submission_id, effort_records([e]))
    back = catalog.read("effort")
    assert sorted(back.submission_id.unique()) == ["s1", "s2", "s3", "s4", "s5"]
    minutes = catalog.query("SELECT submission_id, any_value(minutes) AS m FROM effort GROUP BY 1 ORDER BY 1")
    assert minutes.m.tolist() == [42.5, 75.0, 30.0, 10.0, 20.0]
    pd.testing.assert_frame_equal(summarize_effort(back), summarize_effort(frame), check_dtype=False)
    assert effort_records([]).empty


def test_summary_per_round_and_annotator():
    summary = summarize_effort(effort_records(_campaign())).set_index(["round", "annotator"])
    a0 = summary.loc[(0, "dr_a")]
    assert (a0.submissions, a0.cases, a0.cases_revised, a0.cases_confirmed, a0.cases_unchanged) == (1, 1, 1, 0, 0)
    assert a0.minutes_sum == 42.5 and a0.minutes_median == 42.5
    # organs present in either label: spleen 1, kidney_right 0, liver 108/118
    assert a0.mean_dice == pytest.approx((1.0 + 0.0 + 108 / 118) / 3)
    assert a0.changed_ml_sum == pytest.approx(13 * ML)
    b0 = summary.loc[(0, "dr_b")]
    assert (b0.cases_confirmed, b0.cases_unchanged, b0.share_unchanged, b0.mean_dice) == (1, 1, 1.0, 1.0)
    assert b0.minutes_sum == 75.0 and b0.changed_ml_sum == 0.0
    a1 = summary.loc[(1, "dr_a")]
    assert (a1.submissions, a1.cases, a1.cases_revised, a1.cases_confirmed, a1.cases_unchanged) == (3, 2, 2, 1, 2)
    assert a1.minutes_sum == 60.0 and a1.minutes_median == 20.0
    assert a1.mean_changed_ml == pytest.approx(4 * ML / 3)
    per_round = summarize_effort(effort_records(_campaign()), by=["round"]).set_index("round")
    assert per_round.loc[0, "cases"] == 2 and per_round.loc[0, "share_unchanged"] == 0.5
    assert per_round.loc[1, "minutes_sum"] == 60.0


def test_round_savings_against_the_queue():
    frame = effort_records(_campaign())
    queue = pd.DataFrame({"round": [0, 0, 0, 1, 1, 2], "case_id": ["c1", "c2", "c5", "c3", "c4", "c6"]})
    savings = round_savings(frame, queue).set_index("round")
    r0, r1, r2 = savings.loc[0], savings.loc[1], savings.loc[2]
    assert (r0.queued, r0.answered, r0.unchanged) == (3, 2, 1)
    assert r0.share_unchanged == pytest.approx(1 / 3)
    assert r0.mean_correction_ml == pytest.approx(13 * ML / 2)
    assert (r1.queued, r1.answered, r1.unchanged, r1.share_unchanged) == (2, 2, 2, 1.0)
    assert r1.mean_correction_ml == 0.0  # c4's latest answer is the confirmation
    assert (r2.queued, r2.answered, r2.share_unchanged) == (1, 0, 0.0) and math.isnan(r2.mean_correction_ml)
    # saving work: more unchanged, less to correct, in round 1 than in round 0
    assert r1.share_unchanged > r0.share_unchanged and r1.mean_correction_ml < r0.mean_correction_ml
    no_queue = round_savings(frame).set_index("round")
    assert no_queue.loc[0, "queued"] == 2 and no_queue.loc[0, "share_unchanged"] == 0.5
