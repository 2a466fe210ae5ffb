"""The round-state table: transitions written, attempts counted, answers moving a round on, a round closed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from alqa_core.annotation.labelled.rounds import advance_on_answers, close_round, round_state
from alqa_core.case_errors import clear_case_error, failed_cases, open_case_errors, record_case_error, run_per_case, source_fingerprint
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.rounds import current_round, latest_round, read_rounds, record_state
from alqa_core.training.round_start import next_round


def _queue(cat: Catalog, round_index: int, cases) -> None:
    rows = [{"round": round_index, "position": i + 1, "case_id": c, "package_id": f"r{round_index:03d}-0123456789ab"} for i, c in enumerate(cases)]
    cat.write("queue", f"round_{round_index:03d}", pd.DataFrame(rows, columns=["round", "position", "case_id", "package_id"]))


def _answer(cat: Catalog, case: str, kind: str, round_index: int, sid: str) -> None:
    row = {"submission_id": sid, "case_id": case, "status": "accepted", "kind": kind, "round": round_index, "submitted_at": "2026-12-01T10:00:00+00:00", "sha256": sid}
    cat.write("submissions", sid, pd.DataFrame([row]))
    cat.write("provenance", case, pd.DataFrame([{"case_id": case, "organ": "liver", "source": kind, "submission_id": sid, "superseded": ""}]))


def test_states_attempts_and_the_next_round(tmp_path):
    cat = Catalog(tmp_path)
    assert current_round(cat) == -1 and next_round(cat) == 0
    record_state(cat, 0, "opened", "first", training_cases=3)
    record_state(cat, 0, "trained", "1 member")
    assert next_round(cat) == 0  # still open: a relaunch works on round 0 again
    again = record_state(cat, 0, "opened", "relaunched after a failed run")
    assert again.attempts == 2 and set(again.entered_at) == {"opened"} and again.facts["training_cases"] == 3
    record_state(cat, 0, "queued", "2 cases")
    record_state(cat, 0, "answered", "all answered")
    assert next_round(cat) == 1
    rec = latest_round(cat)
    assert rec.state == "answered" and {"opened", "queued", "answered"} <= set(rec.entered_at)
    assert [r.round_index for r in read_rounds(cat)] == [0]
    with pytest.raises(ValueError, match="unknown round state"):
        record_state(cat, 0, "finished")


def test_answers_move_a_queued_round_to_answered_or_converged(tmp_path):
    cat = Catalog(tmp_path)
    record_state(cat, 0, "queued", "")
    _queue(cat, 0, ["a", "b"])
    assert advance_on_answers(cat) is None  # nothing answered yet
    _answer(cat, "b", "revised", 0, "s1")
    assert advance_on_answers(cat) is None and round_state(cat).pending == ("a",)
    _answer(cat, "a", "revised", 0, "s2")
    assert advance_on_answers(cat).state == "answered"
    # the next round: its top case confirmed converges it, even with the other case unanswered
    record_state(cat, 1, "queued", "")
    _queue(cat, 1, ["c", "d"])
    _answer(cat, "c", "confirmed", 1, "s3")
    rec = advance_on_answers(cat)
    assert rec.state == "converged" and "'c'" in rec.reason and round_state(cat).converged


def test_an_empty_queue_is_written_and_a_round_closes_with_its_pending_cases(tmp_path):
    cat = Catalog(tmp_path)
    record_state(cat, 0, "queued", "")
    _queue(cat, 0, [])
    assert cat.partitions("queue") == ["round_000"] and cat.read("queue").empty  # written, empty: not "never written"
    record_state(cat, 1, "queued", "")
    _queue(cat, 1, ["a", "b"])
    _answer(cat, "a", "revised", 1, "s1")
    closed = close_round(cat, "the annotators are on leave")
    assert closed.state == "closed" and "b" in closed.reason and next_round(cat) == 2
    with pytest.raises(ValueError, match="only a queued round"):
        close_round(cat, "again")


def test_per_case_failures_are_recorded_and_the_others_go_on(tmp_path):
    cat = Catalog(tmp_path / "cat")
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"x")

    def work(case):
        if case == "bad":
            raise AlqaInputError(src, "truncated gzip")
        return case.upper()

    batch = run_per_case(cat, "raw_scans", ["a", "bad", "c"], work, lambda c: src)
    assert batch.done == {"a": "A", "c": "C"} and set(batch.failed) == {"bad"}
    [row] = open_case_errors(cat).to_dict(orient="records")
    assert row["file"] == str(src) and row["reason"] == "truncated gzip" and row["source_fingerprint"] == source_fingerprint(src)
    assert failed_cases(cat) == {"bad"}
    src.write_bytes(b"fixed, longer")
    assert source_fingerprint(src) != row["source_fingerprint"]  # what the new-cases sensor compares to retry
    run_per_case(cat, "raw_scans", ["bad"], lambda c: "ok", lambda c: src)
    assert failed_cases(cat) == set()
    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: it stops the batch
        run_per_case(cat, "raw_scans", ["a"], lambda c: 1 / 0)
    record_case_error(cat, "x", "soft_predictions", None, "no member")
    assert failed_cases(cat) == set() and failed_cases(cat, None) == {"x"}  # not an ingest error
    clear_case_error(cat, "x", "soft_predictions")
    assert open_case_errors(cat).empty
