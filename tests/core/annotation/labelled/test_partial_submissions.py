"""Slice-level (USS) submissions: validation, completion by the pseudo label, and training only on the revised slices."""

from __future__ import annotations

import numpy as np
import pandas as pd

from alqa_core.annotation.intake.inbox import scan_inbox, write_submission
from alqa_core.annotation.intake.validation import validate_entry
from alqa_core.annotation.labelled.answers import case_answers
from alqa_core.annotation.labelled.effort import submission_efforts
from alqa_core.annotation.labelled.revisions import revisions_of
from alqa_core.annotation.labelled.rounds import revised_slices
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.catalog import Catalog
from alqa_core.config.sections import PreprocessConfig
from alqa_core.ingest.cases import preprocess_scan
from alqa_core.io.nifti import read_label, write_ct, write_label, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.training.data import load_training_case
from alqa_core.training.training_set import select_sources
from alqa_core.volume import CTVolume, Grid, LabelMap
from alqa_core.workspace import WorkspaceLayout

AFF = np.diag([-3.0, 3.0, 4.0, 1.0])  # L-R flipped: preprocessing reorients, the mask must follow
SHAPE = (24, 20, 12)
LIVER, SPLEEN = T.value_of("liver"), T.value_of("spleen")


def _pseudo() -> LabelMap:
    a = np.zeros(SHAPE, np.uint8)
    a[4:14, 4:14, 2:10] = LIVER
    a[16:21, 5:10, 3:9] = SPLEEN
    return LabelMap(a, AFF)


def _revision_on(slices) -> np.ndarray:
    """The annotator's file: liver grown by 2 voxels on ``slices``, zeros elsewhere (a slice tool's export)."""
    out = np.zeros(SHAPE, np.uint8)
    fixed = np.array(_pseudo().array)
    fixed[4:16, 4:14][fixed[4:16, 4:14] == 0] = LIVER
    out[:, :, list(slices)] = fixed[:, :, list(slices)]
    return out


def _submit(tmp_path, array, slices=(), case="c1"):
    src = tmp_path / f"rev_{len(list(tmp_path.iterdir()))}.nii.gz"
    write_nifti(src, array, AFF)
    return write_submission(tmp_path / "inbox", case, "dr_a", src, annotated_slices=tuple(slices))


def _validate(tmp_path, pseudo=True):
    [entry] = scan_inbox(tmp_path / "inbox", settle_seconds=0)
    return validate_entry(entry, {"c1"}, lambda c: Grid(SHAPE, AFF), lambda c, p: ("r000-0123456789ab", _pseudo()) if pseudo else None, T)


def test_slice_level_revision_is_completed_by_the_pseudo_label(tmp_path):
    _submit(tmp_path, _revision_on([2, 9]), slices=[9, 2])  # slices with liver but no spleen
    v = _validate(tmp_path)
    assert v.accepted, v.reasons
    assert v.meta.annotated_slices == (2, 9)
    assert v.organ_voxels["spleen"] == int((np.asarray(_pseudo().array) == SPLEEN).sum())  # kept from the pseudo label
    # the same zeros-elsewhere file as a whole-volume revision empties the spleen: rejected
    (tmp_path / "inbox2").mkdir()
    write_nifti(tmp_path / "inbox2" / "r.nii.gz", _revision_on([2, 9]), AFF)
    entry = write_submission(tmp_path / "whole", "c1", "dr_a", tmp_path / "inbox2" / "r.nii.gz")
    whole = validate_entry(entry, {"c1"}, lambda c: Grid(SHAPE, AFF), lambda c, p: ("r000-0123456789ab", _pseudo()), T)
    assert not whole.accepted and "emptied" in whole.reasons[0]


def test_slice_level_revision_outside_the_scan_or_without_a_package_is_rejected(tmp_path):
    entry = _submit(tmp_path, _revision_on([4]), slices=[4, 12])
    v = _validate(tmp_path)
    assert not v.accepted and str(entry.label_path) in v.reasons[0] and "[12]" in v.reasons[0]
    (tmp_path / "inbox" / f"{entry.name}.json").unlink()
    _submit(tmp_path, _revision_on([4]), slices=[4])
    v = _validate(tmp_path, pseudo=False)
    assert not v.accepted and "work package" in v.reasons[0]


def _workspace(tmp_path) -> WorkspaceLayout:
    layout = WorkspaceLayout(tmp_path / "ws")
    rng = np.random.default_rng(0)
    hu = np.where(np.asarray(_pseudo().array) > 0, 60.0, 0.0) + rng.normal(0, 5, SHAPE)
    write_ct(layout.raw_scan("c1"), CTVolume(hu.astype(np.float32), AFF))
    preprocess_scan(layout.raw_scan("c1"), layout.preprocessed("c1"), layout.grid_record("c1"),
                    PreprocessConfig(spacing_mm=(3.0, 3.0, 4.0), crop_to_body=False, pad_to_multiple=1))
    ct = CTVolume(hu.astype(np.float32), AFF)
    package = write_work_package(layout.work_packages("c1"), "c1", 0, ct, _pseudo(), np.zeros((len(T), *SHAPE), np.uint8), ("liver",), T)
    return layout, package


def _rows(layout, package, tmp_path, submissions) -> pd.DataFrame:
    """The submissions rows of slice-level revisions taken through the real intake (validated, label stored)."""
    from alqa_core.annotation.intake.process import process_inbox
    from alqa_core.config.campaign import SubmissionConfig

    catalog = Catalog(layout.catalog)
    for i, (slices, when) in enumerate(submissions):
        path = tmp_path / f"export_{i}.nii.gz"
        write_nifti(path, _revision_on(slices), AFF)
        write_submission(layout.inbox, "c1", "dr_a", path, annotated_slices=tuple(slices), submitted_at=when, package=package.package_id)
        assert len(process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(), 0, settle_seconds=0).accepted) == 1
    return catalog.read("submissions")


def _expected(*slices) -> np.ndarray:
    expected = np.array(_pseudo().array)
    for k in slices:
        expected[:, :, k] = _revision_on([k])[:, :, k]
    return expected


def test_revisions_accumulate_slices_over_the_pseudo_label(tmp_path):
    layout, package = _workspace(tmp_path)
    subs = _rows(layout, package, tmp_path, [([3], "2026-11-23T10:00:00+00:00"), ([7, 8], "2026-11-23T11:00:00+00:00")])
    # validation stored each as the package's pseudo label with its own slices revised
    stored = [np.asarray(read_label(p).array) for p in subs.sort_values("submitted_at").label_path]
    np.testing.assert_array_equal(stored[0], _expected(3))
    np.testing.assert_array_equal(stored[1], _expected(7, 8))
    # the revisions accumulate: the second completed by the first
    revisions = revisions_of("c1", subs, layout, T)
    latest = np.asarray(revisions[-1].label.array)
    np.testing.assert_array_equal(latest, _expected(3, 7, 8))
    assert (latest != np.asarray(_pseudo().array)).any()
    catalog = Catalog(tmp_path / "cat")
    catalog.write("submissions", "all", subs)
    assert revised_slices(catalog) == {"c1": (3, 7, 8)}
    # a later whole-volume answer makes the case whole again
    whole = pd.concat([subs, subs.iloc[:1].assign(annotated_slices="", submission_id="w", submitted_at="2026-11-23T12:00:00+00:00")])
    catalog.write("submissions", "all", whole)
    assert revised_slices(catalog) == {}


def test_rows_recorded_before_labels_were_stored_are_rebuilt_from_the_submitted_file(tmp_path):
    layout, package = _workspace(tmp_path)
    subs = _rows(layout, package, tmp_path, [([3], "2026-11-23T10:00:00+00:00"), ([7, 8], "2026-11-23T11:00:00+00:00")])
    legacy = subs.drop(columns=["label_path"])
    for new, old in zip(revisions_of("c1", subs, layout, T), revisions_of("c1", legacy, layout, T)):
        np.testing.assert_array_equal(np.asarray(new.label.array), np.asarray(old.label.array))


def test_effort_counts_only_the_revised_slices(tmp_path):
    layout, package = _workspace(tmp_path)
    subs = _rows(layout, package, tmp_path, [([3], "2099-11-23T10:00:00+00:00"), ([7], "2099-11-23T11:00:00+00:00")])
    efforts = submission_efforts(case_answers("c1", subs, layout, T), T)
    liver = efforts[efforts.organ == "liver"].set_index("submitted_at").sort_index().changed_voxels.tolist()
    grown = [int(((_revision_on([k]) == LIVER) & (np.asarray(_pseudo().array) != LIVER))[:, :, k].sum()) for k in (3, 7)]
    assert liver == grown and min(grown) > 0  # the second answer is charged its own slice, not the first one's too


def test_training_uses_the_reassembled_label_on_the_revised_slices_only(tmp_path):
    layout, _ = _workspace(tmp_path)
    write_label(layout.original_label("c1"), LabelMap(np.where(np.asarray(_pseudo().array) == SPLEEN, SPLEEN, 0).astype(np.uint8), AFF))
    write_label(layout.reassembled_label("c1"), _pseudo())
    cases = pd.DataFrame([{"case_id": "c1", "split": "train", "annotated_organs": "spleen", "dataset": "d"}])
    sources = select_sources(cases, layout, {"c1"}, T, 0.0, {"c1": (3, 7)})
    assert [(s.origin, s.annotated_organs, s.annotated_slices) for s in sources] == [
        ("original", ("spleen",), ()), ("revised_slices", T.names, (3, 7))]
    original, sliced = (load_training_case(s, layout) for s in sources)
    assert original.annotated_voxels is None and sliced.case_id == "c1#slices"
    mask = sliced.annotated_voxels
    # every masked voxel of the preprocessed (reoriented) grid lies on original slice 3 or 7, and both slices are covered
    import json

    from alqa_core.ingest.preprocess import GridRecord

    record = GridRecord.from_dict(json.loads(layout.grid_record("c1").read_text()))
    ijk = np.argwhere(mask)
    world = np.c_[ijk, np.ones(len(ijk))] @ record.output.affine.T
    k_original = np.rint((world @ np.linalg.inv(record.original.affine).T)[:, 2]).astype(int)
    assert set(k_original) == {3, 7}
    assert mask.sum() == 2 * SHAPE[0] * SHAPE[1]
    # whole-volume review: one reassembled item for every organ
    [whole] = select_sources(cases, layout, {"c1"}, T, 0.0, {})
    assert whole.origin == "reassembled" and whole.annotated_slices == ()


def test_a_scan_and_its_slice_level_item_stay_on_one_side_of_the_validation_split():
    from alqa_core.config.sections import TrainConfig
    from alqa_core.training.cases import TrainingCase
    from alqa_core.training.trainer import split_cases

    def item(case_id):
        return TrainingCase(case_id, np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), ("liver",))

    cases = [item(c) for c in ("a", "a#slices", "b", "c", "c#slices", "d")]
    sides = set()
    for seed in range(20):
        train, val = split_cases(cases, TrainConfig(val_fraction=0.3, seed=seed))
        val_ids = {c.case_id for c in val}
        assert ("a" in val_ids) == ("a#slices" in val_ids) and ("c" in val_ids) == ("c#slices" in val_ids)
        sides.add(frozenset(val_ids))
    assert len(sides) > 1  # the split does vary with the seed
    _, val = split_cases(cases, TrainConfig(val_case_ids=("c",)))
    assert {c.case_id for c in val} == {"c", "c#slices"}


def test_a_rejected_file_resubmitted_as_slice_level_is_taken_not_called_a_duplicate(tmp_path):
    from alqa_core.annotation.intake.process import process_inbox
    from alqa_core.config.campaign import SubmissionConfig

    layout, _ = _workspace(tmp_path)
    catalog = Catalog(layout.catalog)
    src = tmp_path / "export.nii.gz"
    write_nifti(src, _revision_on([2, 9]), AFF)  # a slice tool's export: zeros elsewhere
    write_submission(layout.inbox, "c1", "dr_a", src)  # forgot --slices: the spleen looks emptied
    first = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(), 0, settle_seconds=0)
    assert len(first.rejected) == 1 and "emptied" in first.rejected[0]["reasons"]
    write_submission(layout.inbox, "c1", "dr_a", src, annotated_slices=(2, 9))  # the same bytes, now with --slices
    second = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(), 0, settle_seconds=0)
    assert len(second.accepted) == 1 and not second.duplicates
    write_submission(layout.inbox, "c1", "dr_a", src, annotated_slices=(2, 9))  # and once more: now a duplicate
    third = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(), 0, settle_seconds=0)
    assert len(third.duplicates) == 1 and not third.accepted
    write_submission(layout.inbox, "c1", "dr_a", src, annotated_slices=(2, 9))  # the same file re-sent in round 1
    later = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(), 1, settle_seconds=0)
    assert len(later.accepted) == 1 and later.accepted[0]["round"] == 1  # it answers that round


def test_entries_waiting_for_their_ingest_take_no_batch_slot(tmp_path):
    import time

    from alqa_core.annotation.intake.process import process_inbox
    from alqa_core.config.campaign import SubmissionConfig

    layout, _ = _workspace(tmp_path)
    catalog = Catalog(layout.catalog)
    src = tmp_path / "rev.nii.gz"
    write_nifti(src, _revision_on([2, 9]), AFF)
    waiting = [write_submission(layout.inbox, f"late{i}", "dr_a", src) for i in range(3)]  # registered, not ingested
    time.sleep(0.01)
    write_submission(layout.inbox, "c1", "dr_a", src, annotated_slices=(2, 9))
    one_per_tick = SubmissionConfig(max_per_tick=1)
    result = process_inbox(layout, catalog, {"c1", "late0", "late1", "late2"}, T, one_per_tick, 0, settle_seconds=0)
    assert [r["case_id"] for r in result.accepted] == ["c1"] and len(result.deferred) == 3
    assert all(e.meta_path.exists() for e in waiting)  # still in the inbox, neither rejected nor lost


def test_a_tick_takes_no_entry_once_its_time_budget_is_spent_and_the_rest_wait(tmp_path):
    from itertools import count

    from alqa_core.annotation.intake.process import process_inbox
    from alqa_core.config.campaign import SubmissionConfig

    layout, _ = _workspace(tmp_path)
    catalog = Catalog(layout.catalog)
    for i in range(4):
        src = tmp_path / f"rev{i}.nii.gz"
        rev = _revision_on([2, 9])
        rev[0, 0, 2] = i  # four distinct files
        write_nifti(src, rev, AFF)
        write_submission(layout.inbox, "c1", f"dr_{i}", src, annotated_slices=(2, 9))
    # a clock that advances one second each time it is read: the budget is spent after the third entry
    ticks = count()
    result = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(max_tick_seconds=2.5), 0, settle_seconds=0, clock=lambda: float(next(ticks)))
    assert len(result.rows) == 3 and result.out_of_time and result.remaining
    assert len(scan_inbox(layout.inbox, settle_seconds=0)) == 1  # the fourth waits in the inbox, untouched
    # a budget smaller than one entry still takes one entry per tick, so a slow entry never stalls the inbox
    rest = process_inbox(layout, catalog, {"c1"}, T, SubmissionConfig(max_tick_seconds=1e-9), 0, settle_seconds=0, clock=lambda: float(next(ticks)))
    assert len(rest.rows) == 1 and not rest.remaining and scan_inbox(layout.inbox, settle_seconds=0) == []
    assert sorted(catalog.read("submissions").annotator) == ["dr_0", "dr_1", "dr_2", "dr_3"]  # every one recorded once
