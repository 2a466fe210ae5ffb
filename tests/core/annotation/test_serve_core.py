"""What ``alqa serve`` builds on, without HTTP: annotator credentials, an annotator's next case, MONAI Label names <-> organs."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.intake.annotators import active_annotator, add_annotator, list_annotators, revoke_annotator, verify_secret
from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.annotation.intake.segments import is_positional, label_values, needs_values, positional_names, segments_from_label_info, to_positional
from alqa_core.annotation.intake.worklist import next_item, read_worklist
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.organs import OrganTable

from ...conftest import walk_round


# ---------------------------------------------------------------- annotators


def test_a_secret_is_printed_once_and_only_its_salted_hash_is_kept(tmp_path):
    folder = tmp_path / "annotators"
    found, secret = add_annotator(folder, "dr_a")
    assert len(secret) >= 40 and found.active and found.name == "dr_a"
    stored = (folder / "dr_a.json").read_text()
    assert secret not in stored
    record = json.loads(stored)
    assert record["kdf"] == "scrypt" and len(bytes.fromhex(record["salt"])) == 16
    assert stat.S_IMODE(os.stat(folder / "dr_a.json").st_mode) == 0o600
    assert verify_secret(folder, "dr_a", secret) == found
    assert verify_secret(folder, "dr_a", secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert verify_secret(folder, "dr_b", secret) is None
    assert verify_secret(folder, "../dr_a", secret) is None
    # a second annotator with the same secret would still get a different hash (the salt)
    _, other_secret = add_annotator(folder, "dr_b")
    assert json.loads((folder / "dr_b.json").read_text())["hash"] != record["hash"] and other_secret != secret


def test_an_active_token_is_never_replaced_and_revoking_keeps_the_record(tmp_path):
    folder = tmp_path / "annotators"
    first, secret = add_annotator(folder, "dr_a")
    with pytest.raises(AlqaInputError, match="revoke it first"):
        add_annotator(folder, "dr_a")
    revoked = revoke_annotator(folder, "dr_a")
    assert revoked.revoked_at and not revoked.active
    assert active_annotator(folder, "dr_a") is None and verify_secret(folder, "dr_a", secret) is None
    assert (folder / "revoked" / f"dr_a-{first.credential_id}.json").exists()  # nothing deleted
    second, secret2 = add_annotator(folder, "dr_a")
    assert second.credential_id != first.credential_id and verify_secret(folder, "dr_a", secret2) == second
    rows = list_annotators(folder)
    assert [(a.credential_id, a.active) for a in rows] == [(first.credential_id, False), (second.credential_id, True)]
    with pytest.raises(AlqaInputError, match="invalid annotator name"):
        add_annotator(folder, "../x")
    with pytest.raises(AlqaInputError, match="no active token"):
        revoke_annotator(folder, "nobody")


def test_a_revocation_interrupted_before_the_active_file_went_still_counts(tmp_path):
    folder = tmp_path / "annotators"
    found, secret = add_annotator(folder, "dr_a")
    record = json.loads((folder / "dr_a.json").read_text())
    (folder / "revoked").mkdir()
    (folder / "revoked" / f"dr_a-{found.credential_id}.json").write_text(json.dumps({**record, "revoked_at": "2026-01-01T00:00:00+00:00"}))
    assert verify_secret(folder, "dr_a", secret) is None and active_annotator(folder, "dr_a") is None
    again, _ = add_annotator(folder, "dr_a")  # the leftover is finished off, not an obstacle
    assert again.credential_id != found.credential_id


# ---------------------------------------------------------------- worklist


def _queue(cat: Catalog, t: int, cases) -> None:
    rows = [{"round": t, "position": i + 1, "case_id": c, "organs": ["liver", "spleen"], "score": 1.0 / (i + 1), "package_id": f"r{t:03d}-0123456789a{i}"}
            for i, c in enumerate(cases)]
    cat.write("queue", f"round_{t:03d}", pd.DataFrame(rows))


def _accept(cat: Catalog, case: str, t: int, who: str, sid: str, status: str = "accepted") -> None:
    cat.write("submissions", sid, pd.DataFrame([{"submission_id": sid, "case_id": case, "status": status, "kind": "revised", "round": t, "annotator": who}]))


def test_the_next_case_follows_priority_skips_answered_and_waiting_and_spreads_annotators(tmp_path):
    cat, inbox = Catalog(tmp_path / "catalog"), tmp_path / "inbox"
    assert read_worklist(cat, inbox).round_index == -1 and next_item(read_worklist(cat, inbox), "dr_a") is None
    walk_round(cat, 0, "opened")
    _queue(cat, 0, ["c1", "c2", "c3", "c4"])
    assert next_item(read_worklist(cat, inbox), "dr_a") is None  # the round is not queued yet: nothing handed out
    walk_round(cat, 0, "queued")
    w = read_worklist(cat, inbox)
    assert [i.case_id for i in w.items] == ["c1", "c2", "c3", "c4"] and w.items[0].organs == ("liver", "spleen")
    assert next_item(w, "dr_a").case_id == "c1"
    # dr_a holds c1: dr_b gets c2, dr_a keeps getting c1
    assert next_item(w, "dr_b", {"c1": "dr_a"}).case_id == "c2"
    assert next_item(w, "dr_a", {"c1": "dr_a"}).case_id == "c1"
    _accept(cat, "c1", 0, "dr_a", "s1")
    _accept(cat, "c2", 0, "dr_b", "s2", status="rejected")  # a rejected answer answers nothing
    _accept(cat, "c3", 1, "dr_b", "s3")  # another round's answer does not count
    write_submission(inbox, "c2", "dr_b", None, "confirmed", package="r000-0123456789a1")  # waiting for the sensor
    w = read_worklist(cat, inbox)
    assert [(i.case_id, i.answered_by, i.waiting_by) for i in w.items[:2]] == [("c1", ("dr_a",), ()), ("c2", (), ("dr_b",))]
    assert w.completed == 1
    assert next_item(w, "dr_a").case_id == "c3"
    assert next_item(w, "dr_a", {"c3": "dr_b", "c4": "dr_c"}).case_id == "c3"  # all held: the first open one, not none
    walk_round(cat, 0, "closed", "by hand")
    assert next_item(read_worklist(cat, inbox), "dr_a") is None  # a closed round hands out nothing


# ---------------------------------------------------------------- segments


def test_label_names_are_positions_in_the_organ_table():
    assert is_positional(T) and positional_names(T) == {o.name: o.value for o in T.organs}
    gapped = OrganTable.from_mapping({"liver": 5, "spleen": 1, "portal_vein": 10})
    assert not is_positional(gapped) and positional_names(gapped) == {"spleen": 1, "liver": 2, "portal_vein": 3}
    arr = np.array([0, 1, 5, 10, 7], np.uint8)
    np.testing.assert_array_equal(to_positional(arr, gapped), [0, 1, 2, 3, 0])
    assert arr.tolist() == [0, 1, 5, 10, 7]  # input untouched


def test_label_info_maps_values_by_name_idx_first_then_slicers_export_positions(tmp_path):
    info = [{"name": "spleen", "idx": 1}, {"name": "liver", "idx": 2}]
    assert segments_from_label_info(info) == {1: "spleen", 2: "liver"} and not needs_values(info)
    # a client that sends real values (gaps): idx is the value
    real = [{"name": "spleen", "idx": 1}, {"name": "liver", "idx": 5}]
    assert segments_from_label_info(real, present_values={0, 1, 5}) == {1: "spleen", 5: "liver"}
    # Slicer with a 'background' segment first: idx counts it, the exported file numbers 1..N
    slicer = [{"name": "spleen", "idx": 2}, {"name": "liver", "idx": 3}]
    assert needs_values(slicer)
    assert segments_from_label_info(slicer, present_values={0, 1, 2}) == {1: "spleen", 2: "liver"}
    assert segments_from_label_info(slicer, present_values={0, 3}) == {2: "spleen", 3: "liver"}
    assert segments_from_label_info([{"name": "background", "idx": 0}, *info]) == {1: "spleen", 2: "liver"}
    for bad in ("x", [{"name": "liver"}], [{"name": "liver", "idx": "2"}], [{"name": 3, "idx": 1}], [{"name": "a", "idx": 1}, {"name": "b", "idx": 1}]):
        with pytest.raises(AlqaInputError):
            segments_from_label_info(bad)
    # the file's values, read back; and the sensor's reader applies the mapping by name
    arr = np.zeros((6, 5, 4), np.uint8)
    arr[1:3, 1:3, 1:3], arr[3:5, 2:4, 1:3] = 1, 2
    path = tmp_path / "exported.nii.gz"
    write_nifti(path, arr, np.eye(4))
    assert label_values(path) == {0, 1, 2}
    label = read_submitted_label(path, T, segments_from_label_info(slicer, label_values(path)))
    assert set(np.unique(label.array)) == {0, T.value_of("spleen"), T.value_of("liver")}
    assert (np.asarray(label.array)[arr == 2] == T.value_of("liver")).all()


def test_the_worklist_fingerprint_moves_with_every_write_it_depends_on(tmp_path):
    from alqa_core.annotation.intake.worklist import worklist_fingerprint

    cat, inbox = Catalog(tmp_path / "catalog"), tmp_path / "inbox"
    walk_round(cat, 0, "queued")
    _queue(cat, 0, ["c1", "c2"])
    assert worklist_fingerprint(cat, inbox) is None  # just written: inside the settle window, never trusted
    seen = [worklist_fingerprint(cat, inbox, settle_seconds=0)]
    for change in (
        lambda: _accept(cat, "c1", 0, "dr_a", "s1"),
        lambda: write_submission(inbox, "c2", "dr_b", None, "confirmed", package="r000-0123456789a1"),
        lambda: (inbox / "dr_c").mkdir(),
        lambda: (inbox / "dr_c" / "c2.nii.gz").write_bytes(b"hand drop"),
        lambda: walk_round(cat, 0, "closed", "by hand"),
        lambda: _queue(cat, 0, ["c2", "c1"]),
    ):
        time.sleep(0.01)
        change()
        seen.append(worklist_fingerprint(cat, inbox, settle_seconds=0))
    assert len(set(seen)) == len(seen)
    assert worklist_fingerprint(cat, inbox, settle_seconds=0) == seen[-1]  # nothing changed: the same
