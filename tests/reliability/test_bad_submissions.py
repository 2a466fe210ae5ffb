"""Bad submissions through the real intake (inbox -> validation -> store/quarantine -> Parquet catalog).

Each bad kind is its own test. A rejection must name the file and the reason
(in the catalog row and in ``quarantine/<entry>/reason.txt``), keep every byte
the annotator sent (moved to quarantine, never deleted) and change no catalog
fact: the only new row is the ``rejected`` audit row that ``alqa status`` lists.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.intake.inbox import SubmissionMeta, write_submission
from alqa_core.annotation.intake.process import process_inbox
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import SubmissionConfig
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import write_ct, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume
from alqa_core.workspace import WorkspaceLayout

from .conftest import AFFINE, OTHER_AFFINE, SHAPE, phantom_ct, phantom_label, tree_hashes

# --------------------------------------------------------------------------
# Proof that a file is never opened: a Python audit hook sees every open().
# (Hooks cannot be removed; this one only records paths it is told to watch.)
# --------------------------------------------------------------------------
_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _audit(event: str, args) -> None:
    if event == "open" and _WATCHED and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0]) if not isinstance(args[0], os.PathLike) else os.fspath(args[0])
        if path in _WATCHED:
            _OPENED.append(path)


sys.addaudithook(_audit)


@pytest.fixture
def workspace(tmp_path):
    """Raw scans of c1 and c2 (different grids) and a catalog with facts already in it."""
    layout = WorkspaceLayout(tmp_path / "ws")
    write_ct(layout.raw_scan("c1"), CTVolume(phantom_ct(0), AFFINE))
    write_ct(layout.raw_scan("c2"), CTVolume(phantom_ct(1), OTHER_AFFINE))
    cat = Catalog(layout.catalog)
    cat.write("cases", "c1", pd.DataFrame([{"case_id": "c1", "dataset": "d", "split": "train"}]))
    cat.write("cases", "c2", pd.DataFrame([{"case_id": "c2", "dataset": "d", "split": "train"}]))
    cat.write("provenance", "c1", pd.DataFrame([{"case_id": "c1", "organ": "liver", "source": "original"}]))
    return layout, cat


def _label_file(tmp_path: Path, array, affine=AFFINE, name="rev.nii.gz") -> Path:
    return write_nifti(tmp_path / "annotator" / name, np.asarray(array), affine)


def _sidecar(inbox: Path, name: str, case_id: str, annotator="dr_a") -> Path:
    meta = SubmissionMeta(case_id, annotator, "revised", "2026-11-23T10:00:00+00:00")
    return atomic_write_text(inbox / f"{name}.json", meta.to_json())


def _noisy_label() -> np.ndarray:
    """A label whose gzip stream is long enough that cutting it truncates voxel data."""
    lab = phantom_label()
    rng = np.random.default_rng(3)
    lab[rng.random(SHAPE) < 0.3] = T.value_of("liver")
    return lab


# Each maker puts ONE bad entry into the inbox and returns (inbox label path or sidecar, expected reason).
def _wrong_shape(tmp_path, inbox):
    src = _label_file(tmp_path, np.zeros((24, 20, 11), np.uint8))
    return write_submission(inbox, "c1", "dr_a", src), "not on the case's grid"


def _wrong_affine(tmp_path, inbox):
    src = _label_file(tmp_path, phantom_label(), np.diag([3.0, 3.0, 4.5, 1.0]))
    return write_submission(inbox, "c1", "dr_a", src), "not on the case's grid"


def _float_labels(tmp_path, inbox):
    src = _label_file(tmp_path, phantom_label().astype(np.float32) * 0.5)
    return write_submission(inbox, "c1", "dr_a", src), "non-integer"


def _unknown_values(tmp_path, inbox):
    src = _label_file(tmp_path, np.where(phantom_label() > 0, 42, 0).astype(np.uint8))
    return write_submission(inbox, "c1", "dr_a", src), "label values [42] are not in the organ table"


def _empty_file(tmp_path, inbox):
    src = tmp_path / "annotator" / "empty.nii.gz"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"")
    return write_submission(inbox, "c1", "dr_a", src), "file is empty"


def _truncated_gzip(tmp_path, inbox):
    src = _label_file(tmp_path, _noisy_label())
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    return write_submission(inbox, "c1", "dr_a", src), "truncated"


def _nan(tmp_path, inbox):
    arr = phantom_label().astype(np.float32)
    arr[0, 0, 0] = np.nan
    src = _label_file(tmp_path, arr)
    return write_submission(inbox, "c1", "dr_a", src), "NaN"


def _not_nifti(tmp_path, inbox):
    src = tmp_path / "annotator" / "notes.nii.gz"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(gzip.compress(b"case c1: liver looks fine to me\n" * 20))
    return write_submission(inbox, "c1", "dr_a", src), "not a NIfTI image"


def _path_traversal(tmp_path, inbox):
    # write_submission refuses such ids itself; a hand-written sidecar is the way in
    name = "20261123T100000_traversal_0001"
    write_nifti(inbox / f"{name}.nii.gz", phantom_label(), AFFINE)
    _sidecar(inbox, name, "../../c1")
    return name, "invalid case id '../../c1'"


def _unknown_case(tmp_path, inbox):
    src = _label_file(tmp_path, phantom_label())
    return write_submission(inbox, "c9", "dr_a", src), "case 'c9' is not part of this campaign"


def _wrong_case(tmp_path, inbox):
    # a correct label of c2 (its own grid), submitted for c1
    src = _label_file(tmp_path, phantom_label(), OTHER_AFFINE, name="c2_label.nii.gz")
    return write_submission(inbox, "c1", "dr_a", src), "not on the case's grid"


def _bad_sidecar(tmp_path, inbox):
    name = "20261123T100000_c1_badjson"
    write_nifti(inbox / f"{name}.nii.gz", phantom_label(), AFFINE)
    (inbox / f"{name}.json").write_text('{"case_id": "c1", "annotator": ')
    return name, "unreadable submission sidecar"


def _hand_drop_not_a_case_id(tmp_path, inbox):
    # a file dragged into the inbox: folder and file names are free text, not case ids
    write_nifti(inbox / "Dr Smith" / "liver fixed (2).nii.gz", phantom_label(), AFFINE)
    return "Dr Smith/liver fixed (2).nii.gz", "invalid case id 'liver fixed (2)'"


BAD = {
    "wrong_shape": _wrong_shape,
    "wrong_affine": _wrong_affine,
    "float_labels": _float_labels,
    "unknown_label_values": _unknown_values,
    "empty_file": _empty_file,
    "truncated_gzip": _truncated_gzip,
    "nan": _nan,
    "not_nifti": _not_nifti,
    "case_id_path_traversal": _path_traversal,
    "case_unknown_to_campaign": _unknown_case,
    "label_for_the_wrong_case": _wrong_case,
    "malformed_sidecar": _bad_sidecar,
    "hand_drop_named_with_free_text": _hand_drop_not_a_case_id,
}


def _check_rejected(layout: WorkspaceLayout, cat: Catalog, before: dict, name: str, reason: str, sent: dict[str, bytes], result):
    assert [r["entry"] for r in result.rejected] == [name], result
    assert not result.accepted and not result.duplicates
    row = result.rejected[0]
    # the message names the file and the reason
    assert reason in row["reasons"], row["reasons"]
    assert name in row["reasons"], row["reasons"]
    [folder] = list(layout.quarantine.iterdir())
    assert folder.name.startswith(name.replace("/", "__"))
    text = (folder / "reason.txt").read_text()
    assert reason in text and name in text
    # every byte the annotator sent is kept, in quarantine
    for fname, data in sent.items():
        assert (folder / fname).read_bytes() == data, fname
    assert not [p for p in layout.inbox.rglob("*") if p.is_file()], list(layout.inbox.rglob("*"))
    assert not layout.submissions_store.exists() or not any(layout.submissions_store.iterdir())
    # the catalog's facts are unchanged: the one new file is the rejected row of the submissions table
    after = tree_hashes(layout.catalog)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert len(changed) == 1 and next(iter(changed)).startswith("submissions/"), changed
    subs = cat.read("submissions")
    assert list(subs.status) == ["rejected"]
    assert not (layout.root / "c1").exists() and not (layout.root.parent / "c1").exists()


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_submission_is_rejected_quarantined_and_changes_no_fact(tmp_path, workspace, figures, kind):
    layout, cat = workspace
    before = tree_hashes(layout.catalog)
    made, reason = BAD[kind](tmp_path, layout.inbox)
    name = made if isinstance(made, str) else made.name
    sent = {p.name: p.read_bytes() for p in layout.inbox.rglob("*") if p.is_file() and not p.name.startswith(".")}
    figures.add("bad_inputs_tried")
    result = process_inbox(layout, cat, {"c1", "c2"}, T, SubmissionConfig(), -1, settle_seconds=0)
    _check_rejected(layout, cat, before, name, reason, sent, result)
    figures.add("bad_inputs_rejected")


def test_two_gigabyte_file_is_refused_by_the_configured_limit_without_being_opened(tmp_path, workspace, figures):
    """A 2 GiB sparse file (no disk cost): refused from its size alone, never opened or decompressed."""
    layout, cat = workspace
    before = tree_hashes(layout.catalog)
    name = "20261123T100000_c1_huge"
    layout.inbox.mkdir(parents=True)
    huge = layout.inbox / f"{name}.nii.gz"
    with open(huge, "wb") as fh:
        fh.truncate(2 * 2**30)
    assert huge.stat().st_size == 2 * 2**30
    sidecar = _sidecar(layout.inbox, name, "c1")
    figures.add("bad_inputs_tried")
    watched = {str(huge), str(layout.quarantine / name / huge.name)}
    _WATCHED.update(watched)
    try:
        result = process_inbox(layout, cat, {"c1", "c2"}, T, SubmissionConfig(max_file_mb=1024), -1, settle_seconds=0)
    finally:
        _WATCHED.difference_update(watched)
    assert _OPENED == [], f"the oversized file was opened: {_OPENED}"
    [row] = result.rejected
    assert "2048 MB exceeds the 1024 MB limit (not read)" in row["reasons"] and str(huge) in row["reasons"]
    assert "gzip" not in row["reasons"] and "NIfTI" not in row["reasons"]
    moved = layout.quarantine / name / huge.name
    assert moved.stat().st_size == 2 * 2**30  # kept (moved, not copied or deleted)
    _WATCHED.add(str(moved))  # the detector itself works: opening the file is seen
    try:
        open(moved, "rb").close()
    finally:
        _WATCHED.discard(str(moved))
    assert _OPENED == [str(moved)]
    _OPENED.clear()
    assert (layout.quarantine / name / sidecar.name).exists()
    after = tree_hashes(layout.catalog)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert len(changed) == 1 and next(iter(changed)).startswith("submissions/"), changed
    figures.add("bad_inputs_rejected")


def test_default_limit_comes_from_the_campaign_config(tmp_path):
    """``submissions.max_file_mb`` in the YAML is what the intake gets (default 2048)."""
    from alqa_core.config.campaign import parse_campaign

    base = {"name": "c", "datasets": [{"path": str(tmp_path)}], "architectures": [{"name": "unet"}]}
    assert parse_campaign(base).submissions.max_file_mb == 2048.0
    assert parse_campaign({**base, "submissions": {"max_file_mb": 10}}).submissions.max_file_mb == 10.0


def test_a_good_submission_beside_the_bad_ones_is_accepted(tmp_path, workspace, figures):
    """The suite's control: the same intake accepts a valid revision, so rejections are not blanket."""
    layout, cat = workspace
    src = _label_file(tmp_path, phantom_label())
    entry = write_submission(layout.inbox, "c1", "dr_a", src)
    _wrong_case(tmp_path, layout.inbox)
    result = process_inbox(layout, cat, {"c1", "c2"}, T, SubmissionConfig(), -1, settle_seconds=0)
    assert [r["entry"] for r in result.accepted] == [entry.name]
    assert len(result.rejected) == 1
    stored = Path(result.accepted[0]["stored_path"])
    assert stored.read_bytes() == src.read_bytes()
    assert json.loads((layout.submissions_store / f"{result.accepted[0]['sha256']}.json").read_text())["case_id"] == "c1"


def test_a_second_bad_hand_drop_with_the_same_name_does_not_overwrite_the_first(tmp_path, workspace, figures):
    layout, cat = workspace
    drop = layout.inbox / "dr_a" / "c1.nii.gz"
    sent = []
    for i, affine in enumerate((OTHER_AFFINE, np.diag([3.0, 3.0, 4.5, 1.0]))):
        write_nifti(drop, phantom_label(), affine)
        os.utime(drop, ns=(10**18 + i, 10**18 + i))  # two drops, two file times
        sent.append(drop.read_bytes())
        figures.add("bad_inputs_tried")
        result = process_inbox(layout, cat, {"c1", "c2"}, T, SubmissionConfig(), -1, settle_seconds=0)
        assert len(result.rejected) == 1 and "not on the case's grid" in result.rejected[0]["reasons"]
    kept = sorted(p.read_bytes() for p in layout.quarantine.rglob("c1.nii.gz"))
    assert kept == sorted(sent) and sent[0] != sent[1]
    assert len(cat.read("submissions")) == 2
    figures.add("bad_inputs_rejected", 2)
