"""The round state machine: legal transitions written with their facts, every other one refused, attempts counted, answers
moving a round on, a round closed by hand, one decision of what comes next, and no other writer of the rounds table."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from alqa_core.annotation.labelled.rounds import advance_on_answers, close_round, round_state, what_next
from alqa_core.case_errors import clear_case_error, failed_cases, open_case_errors, record_case_error, run_per_case, source_fingerprint
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.rounds import (
    FINISHED,
    IN_FLIGHT,
    NEW,
    STATES,
    TRANSITIONS,
    IllegalTransition,
    RoundDecision,
    RoundRecord,
    check_transition,
    current_round,
    decide,
    latest_round,
    next_round,
    read_rounds,
    require_transition,
    transition,
)

from ...conftest import walk_round

REPO = Path(__file__).resolve().parents[3]


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
    transition(cat, 0, "opened", "first", training_cases=3, training_set_sha256="x", cases_refused=0)
    transition(cat, 0, "trained", "1 member", members_trained=1)
    assert next_round(cat) == 0  # still open: a relaunch works on round 0 again
    again = transition(cat, 0, "opened", "relaunched after a failed run", training_cases=3, training_set_sha256="x", cases_refused=0)
    assert again.attempts == 2 and set(again.entered_at) == {"opened"}  # the failed attempt's times are cleared
    transition(cat, 0, "trained", "", members_trained=1)
    transition(cat, 0, "predicted", "", cases_predicted=2, cases_with_errors=0)
    transition(cat, 0, "queued", "2 cases", queued=2)
    transition(cat, 0, "answered", "all answered")
    assert next_round(cat) == 1
    rec = latest_round(cat)
    assert rec.state == "answered" and set(rec.entered_at) == {"opened", "trained", "predicted", "queued", "answered"}
    assert rec.facts["training_cases"] == 3 and rec.facts["queued"] == 2  # each transition's facts are kept
    assert [r.round_index for r in read_rounds(cat)] == [0]
    with pytest.raises(IllegalTransition, match="unknown round state"):
        transition(cat, 0, "finished")


def _record(round_index: int, state: str) -> RoundRecord:
    return RoundRecord(round_index, state, "", "", 1, {state: "2026-12-01T10:00:00+00:00"}, {})


def test_every_transition_the_table_does_not_allow_is_refused():
    """Round 1 in each state (or none yet, round 0 answered), asked to enter each state: legal exactly as the table says."""
    for source in (NEW, *STATES):
        rounds = [_record(0, "answered")] + ([_record(1, source)] if source else [])
        for target in STATES:
            facts = {f: 0 for f in TRANSITIONS[target].records}
            if source in TRANSITIONS[target].sources:
                check_transition(rounds, 1, target, facts)
            else:
                with pytest.raises(IllegalTransition, match=f"cannot go from {source or 'no state'} to {target}"):
                    check_transition(rounds, 1, target, facts)


def test_an_illegal_transition_writes_nothing(tmp_path):
    cat = Catalog(tmp_path)
    walk_round(cat, 0, "predicted")
    before = cat.read("rounds").to_dict(orient="records")
    for target in ("answered", "closed", "opened"):
        if target == "opened":
            walk_round(cat, 0, "queued")
            before = cat.read("rounds").to_dict(orient="records")
        with pytest.raises(IllegalTransition):
            transition(cat, 0, target, "illegal", training_cases=0, training_set_sha256="", cases_refused=0)
        assert cat.read("rounds").to_dict(orient="records") == before


def test_rounds_open_in_order_and_only_the_current_round_moves(tmp_path):
    cat = Catalog(tmp_path)
    with pytest.raises(IllegalTransition, match="next round to open is 0"):
        transition(cat, 1, "opened", training_cases=0, training_set_sha256="", cases_refused=0)
    walk_round(cat, 0, "queued")
    with pytest.raises(IllegalTransition, match="must be answered, closed or converged first"):
        transition(cat, 1, "opened", training_cases=0, training_set_sha256="", cases_refused=0)
    with pytest.raises(IllegalTransition, match="close it first"):  # a queued round's queue is out: never reopened
        transition(cat, 0, "opened", training_cases=0, training_set_sha256="", cases_refused=0)
    walk_round(cat, 0, "closed")
    walk_round(cat, 1, "opened")
    with pytest.raises(IllegalTransition, match="round 1 is the current one"):
        transition(cat, 0, "answered")
    with pytest.raises(IllegalTransition, match=r"must record \['members_trained'\]"):
        transition(cat, 1, "trained", "forgot the facts")
    with pytest.raises(IllegalTransition):
        require_transition(cat, 1, "queued")  # what a step asks before its work: opened -> queued skips two steps


def test_what_happens_next_is_one_decision(tmp_path):
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)

    def record(state, queued_hours_ago=1.0):
        at = (now - timedelta(hours=queued_hours_ago)).isoformat()
        return RoundRecord(3, state, "why", at, 1, {"queued": at} if state not in IN_FLIGHT else {}, {})

    assert decide(None, 0, 0, 0) == RoundDecision(decide(None, 0, 0, 0).reason, run=0, by_hand=True)
    assert decide(record("converged"), 0, 0, 0).done and decide(record("converged"), 0, 0, 0).run is None
    for state in IN_FLIGHT:
        assert decide(record(state), 0, 0, 0).run == 3  # its run did not finish: run it again
    waiting = decide(record("queued"), 2, 5, 0, timeout_hours=24, now=now)
    assert waiting.run is None and waiting.close is None and "2 of 5" in waiting.reason
    assert decide(record("queued"), 0, 5, 1, now=now).run is None  # answered, not yet reassembled
    late = decide(record("queued", queued_hours_ago=25), 2, 5, 0, timeout_hours=24, now=now)
    assert (late.close, late.run) == (3, 4) and "24 h" in late.close_reason
    late_waiting = decide(record("queued", queued_hours_ago=25), 2, 5, 1, timeout_hours=24, now=now)
    assert (late_waiting.close, late_waiting.run) == (3, None) and "not reassembled" in late_waiting.reason
    for state in FINISHED:
        assert decide(record(state), 0, 5, 0).run == 4
        assert decide(record(state), 0, 5, 2).run is None


def test_answers_move_a_queued_round_to_answered_or_converged(tmp_path):
    cat = Catalog(tmp_path)
    walk_round(cat, 0, "queued")
    _queue(cat, 0, ["a", "b"])
    assert advance_on_answers(cat) is None  # nothing answered yet
    _answer(cat, "b", "revised", 0, "s1")
    assert advance_on_answers(cat) is None and round_state(cat).pending == ("a",)
    assert what_next(cat).run is None and "1 of 2" in what_next(cat).reason
    _answer(cat, "a", "revised", 0, "s2")
    assert advance_on_answers(cat).state == "answered"
    assert what_next(cat).run == 1
    # the next round: its top case confirmed converges it, even with the other case unanswered
    walk_round(cat, 1, "queued")
    _queue(cat, 1, ["c", "d"])
    _answer(cat, "c", "confirmed", 1, "s3")
    rec = advance_on_answers(cat)
    assert rec.state == "converged" and "'c'" in rec.reason and round_state(cat).converged
    assert what_next(cat).done


def test_an_empty_queue_is_written_and_a_round_closes_with_its_pending_cases(tmp_path):
    cat = Catalog(tmp_path)
    walk_round(cat, 0, "converged", "the queue is empty")
    _queue(cat, 0, [])
    assert cat.partitions("queue") == ["round_000"] and cat.read("queue").empty  # written, empty: not "never written"
    walk_round(cat, 1, "queued")
    _queue(cat, 1, ["a", "b"])
    _answer(cat, "a", "revised", 1, "s1")
    closed = close_round(cat, "the annotators are on leave")
    assert closed.state == "closed" and "b" in closed.reason and next_round(cat) == 2
    with pytest.raises(IllegalTransition, match="only a queued round"):
        close_round(cat, "again")


def _rounds_table_writes(source: str) -> list[int]:
    """Lines of ``source`` that write the rounds table or reach past the state machine: a catalog write (or
    path_of, to_parquet) naming the "rounds" table, or any use of alqa_core.rounds' TABLE or private names."""
    tree = ast.parse(source)
    names, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "alqa_core.rounds":
            names |= {a.asname or a.name for a in node.names if a.name == "TABLE" or a.name.startswith("_")}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "alqa_core.rounds"}
        elif isinstance(node, ast.ImportFrom) and node.module == "alqa_core":
            modules |= {a.asname or a.name for a in node.names if a.name == "rounds"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute) and node.func.attr in ("write", "path_of", "to_parquet"):
            if isinstance(node.args[0], ast.Constant) and node.args[0].value == "rounds":
                lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id in names:
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules and (node.attr == "TABLE" or node.attr.startswith("_")):
            lines.append(node.lineno)
    return lines


def test_only_the_state_machine_writes_the_rounds_table():
    """Every module of alqa_core and alqa_dagster but alqa_core/rounds.py: no write to the rounds table."""
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sorted(p for pkg in ("alqa_core", "alqa_dagster") for p in (REPO / pkg).rglob("*.py"))
        if path != REPO / "alqa_core" / "rounds.py"
        for line in _rounds_table_writes(path.read_text())
    ]
    assert offenders == []
    # the check finds each way round the state machine
    assert _rounds_table_writes('cat.write("rounds", "round_000", frame)') == [1]
    assert _rounds_table_writes('from alqa_core.rounds import TABLE\ncat.write(TABLE, "round_000", frame)') == [2]
    assert _rounds_table_writes('import alqa_core.rounds as r\ncat.write(r.TABLE, r._partition(0), frame)') == [2, 2]
    assert _rounds_table_writes('from alqa_core.rounds import transition\ntransition(cat, 0, "opened")') == []


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
