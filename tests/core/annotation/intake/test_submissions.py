"""Inbox, validation, immutable store and quarantine, on real NIfTI files."""

from __future__ import annotations

import time

import numpy as np
import pytest

from alqa_core.annotation.intake.inbox import scan_inbox, write_submission
from alqa_core.annotation.intake.store import quarantine_entry, store_accepted
from alqa_core.annotation.intake.validation import validate_entry
from alqa_core.io.nifti import write_label, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import Grid, LabelMap

AFF = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (20, 16, 8)
GRID = Grid(SHAPE, AFF)


def _pseudo() -> LabelMap:
    a = np.zeros(SHAPE, np.uint8)
    a[2:8, 2:8, 2:6] = T.value_of("liver")
    a[12:16, 10:14, 2:6] = T.value_of("kidney_left")  # larger x = patient's right in RAS? see swap test
    a[3:7, 10:14, 2:6] = T.value_of("kidney_right")
    return LabelMap(a, AFF)


PACKAGE = "r000-0123456789ab"


def _validate(entry, cases=("c1",), queued=True, **kw):
    return validate_entry(entry, set(cases), lambda c: GRID, lambda c, p: (PACKAGE, _pseudo()) if queued else None, T, **kw)


def _submit(tmp_path, array, affine=AFF, case="c1", name="rev.nii.gz", **kw):
    src = tmp_path / name
    write_nifti(src, array, affine)
    return write_submission(tmp_path / "inbox", case, "dr_a", src, **kw)


def test_valid_revision_is_accepted_and_stored_by_content(tmp_path):
    rev = np.array(_pseudo().array)
    rev[2:9, 2:8, 2:6][rev[2:9, 2:8, 2:6] == 0] = T.value_of("liver")
    entry = _submit(tmp_path, rev)
    [found] = scan_inbox(tmp_path / "inbox", settle_seconds=0)
    assert found.name == entry.name
    v = _validate(found)
    assert v.accepted, v.reasons
    assert v.meta.annotator == "dr_a" and v.meta.kind == "revised"
    stored = store_accepted(v, tmp_path / "store")
    assert stored.name == f"{v.sha256}.nii.gz" and stored.exists()
    assert scan_inbox(tmp_path / "inbox", settle_seconds=0) == []  # moved out, not deleted
    assert (tmp_path / "store" / f"{v.sha256}.json").exists()


def test_an_accepted_revision_keeps_its_label_as_validated_once_per_what_made_it(tmp_path):
    from alqa_core.annotation.intake.store import accepted_label_key, store_label
    from alqa_core.io.nifti import read_label
    from alqa_core.workspace import WorkspaceLayout

    layout = WorkspaceLayout(tmp_path / "ws")
    rev = np.array(_pseudo().array)
    rev[:, :, 3] = 0  # a slice tool's export: only slice 3 holds the revision (there: nothing)
    whole, sliced = _validate(_submit(tmp_path, rev, emptied_organs=T.names)), _validate(_submit(tmp_path, rev, name="s.nii.gz", annotated_slices=(3,)))
    assert whole.accepted and sliced.accepted and whole.sha256 == sliced.sha256
    np.testing.assert_array_equal(whole.label.array, rev)
    merged = np.array(_pseudo().array)
    merged[:, :, 3] = 0
    np.testing.assert_array_equal(sliced.label.array, merged)  # the package's pseudo label with slice 3 revised
    # the same bytes answered as slices are another label: keyed by what made it, not by the file alone
    assert accepted_label_key(whole) != accepted_label_key(sliced)
    paths = [store_label(v, layout) for v in (whole, sliced, sliced)]
    assert paths[1] == paths[2] and paths[0] != paths[1]
    np.testing.assert_array_equal(read_label(paths[1]).array, merged)
    rejected = _validate(_submit(tmp_path, np.zeros((3, 3, 3), np.uint8), name="bad.nii.gz"))
    assert rejected.label is None
    with pytest.raises(ValueError, match="only an accepted revision"):
        store_label(rejected, layout)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: np.zeros((20, 16, 9), np.uint8), "not on the case's grid"),
        (lambda p: np.where(p > 0, 42, 0).astype(np.uint8), "not in the organ table"),
        (lambda p: np.where(p == T.value_of("liver"), 0, p).astype(np.uint8), "emptied without saying so"),
        (lambda p: p.astype(np.float32) + 0.5, "non-integer"),
    ],
)
def test_bad_revisions_are_rejected_with_file_and_reason(tmp_path, make, reason):
    entry = _submit(tmp_path, make(np.array(_pseudo().array)))
    v = _validate(entry)
    assert not v.accepted
    assert any(reason in r for r in v.reasons), v.reasons
    assert any(entry.name in r for r in v.reasons)
    folder = quarantine_entry(v, tmp_path / "quarantine")
    assert reason in (folder / "reason.txt").read_text()
    assert (folder / f"{entry.name}.nii.gz").exists()


def test_wrong_affine_truncated_and_unknown_case(tmp_path):
    p = np.array(_pseudo().array)
    v = _validate(_submit(tmp_path, p, affine=np.diag([2.0, 2.0, 3.5, 1.0])))
    assert "not on the case's grid" in v.reasons[0]
    entry = _submit(tmp_path, p, name="t.nii.gz")
    data = entry.label_path.read_bytes()
    entry.label_path.write_bytes(data[: len(data) // 2])
    assert not _validate(entry).accepted
    v = _validate(_submit(tmp_path, p, case="zz"))
    assert "not part of this campaign" in v.reasons[0]


def test_emptying_is_allowed_when_declared_and_flags_swaps(tmp_path):
    p = np.array(_pseudo().array)
    no_liver = np.where(p == T.value_of("liver"), 0, p).astype(np.uint8)
    assert _validate(_submit(tmp_path, no_liver, emptied_organs=("liver",))).accepted
    swapped = p.copy()
    swapped[p == T.value_of("kidney_left")] = T.value_of("kidney_right")
    swapped[p == T.value_of("kidney_right")] = T.value_of("kidney_left")
    v = _validate(_submit(tmp_path, swapped, name="s.nii.gz"))
    assert v.accepted and any("swapped" in f for f in v.flags)


def test_size_limit_refuses_before_reading(tmp_path):
    entry = _submit(tmp_path, np.array(_pseudo().array))
    v = _validate(entry, max_file_mb=1e-6)
    assert "exceeds" in v.reasons[0]


def test_confirmation_and_cursor_order(tmp_path):
    inbox = tmp_path / "inbox"
    a = write_submission(inbox, "c1", "dr_a", None, kind="confirmed")
    time.sleep(0.01)
    b = write_submission(inbox, "c1", "dr_b", None, kind="confirmed")
    entries = scan_inbox(inbox, settle_seconds=0)
    assert [e.name for e in entries] == [a.name, b.name]
    assert [e.name for e in scan_inbox(inbox, after=a.cursor_key, settle_seconds=0)] == [b.name]
    assert _validate(entries[0]).accepted and _validate(entries[0]).package_id == PACKAGE
    # a confirmation means "this package's pseudo label": a case never queued has none to confirm
    never = _validate(entries[0], queued=False)
    assert not never.accepted and "no work package to confirm" in never.reasons[0]


def test_hand_drop_waits_until_settled(tmp_path):
    inbox = tmp_path / "inbox"
    write_label(inbox / "dr_c" / "c1.nii.gz", _pseudo())
    assert scan_inbox(inbox, settle_seconds=3600) == []
    [e] = scan_inbox(inbox, settle_seconds=0)
    v = _validate(e)
    assert v.accepted and v.meta.annotator == "dr_c" and v.meta.case_id == "c1"
