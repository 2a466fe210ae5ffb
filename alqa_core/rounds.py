"""The round state machine: the states, the transitions allowed, what each records, and what the loop does next.

A round goes ``opened`` (its training set is fixed) -> ``trained`` (its
checkpoints exist, or training was skipped and the row says why) ->
``predicted`` (every ingested case has predictions and attention) ->
``queued`` (its work packages are written) -> ``answered`` (every queued case
is answered and reassembled) or ``closed`` (by ``alqa round close`` or the
round timeout; unanswered cases go back to the pool), or ``converged`` (the
top case was confirmed, or the queue came out empty).

This module is the only writer of the catalog's ``rounds`` table (one row
per round): every state change is a :func:`transition`, checked against
:data:`TRANSITIONS` (an illegal one raises :class:`IllegalTransition` and
writes nothing), and records its reason, the facts :data:`TRANSITIONS` names,
the time of every state the round went through (``<state>_at``) and how many
times the round was opened (``attempts``: a failed round is retried). The
sensors, ``alqa round``, ``alqa status`` and the server read the table:
nothing infers a round's state from missing files.

What the loop does next is :func:`decide`, a pure function of the round's
facts (``annotation.labelled.rounds.what_next`` gathers them from the
catalog); the round sensor and ``alqa round`` both act on its
:class:`RoundDecision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

import pandas as pd

from alqa_core.catalog import Catalog

TABLE = "rounds"
STATES = ("opened", "trained", "predicted", "queued", "answered", "closed", "converged")
#: states after which the next round may start
FINISHED = ("answered", "closed")
#: states in which a round's own run is still to finish (a failed run is retried)
IN_FLIGHT = ("opened", "trained", "predicted")
#: the source of a round that has no row yet
NEW = ""


@dataclass(frozen=True)
class Transition:
    """How a round enters one state: from which states, what it records, and what it means."""

    target: str
    sources: tuple[str, ...]
    #: the facts the transition must record (besides reason, time and attempts)
    records: tuple[str, ...]
    meaning: str


#: target state -> its transition. ``opened`` from ``NEW`` opens round t+1 (round 0 first) once round t is
#: answered, closed or converged; ``opened`` from a state in flight is a new attempt of the same round.
TRANSITIONS: Mapping[str, Transition] = {
    t.target: t
    for t in (
        Transition("opened", (NEW, "opened", "trained", "predicted"), ("training_cases", "training_set_sha256", "cases_refused"),
                   "the round's training set is fixed (again: a new attempt of a round whose run did not finish)"),
        Transition("trained", ("opened", "trained"), ("members_trained",), "its checkpoints are written, or training was skipped (the reason says why)"),
        Transition("predicted", ("trained", "predicted"), ("cases_predicted", "cases_with_errors"), "every ingested case has predictions, attention and a rank"),
        Transition("queued", ("predicted", "queued"), ("queued",), "its queue and work packages are written (again: the queue rewritten)"),
        Transition("converged", ("predicted", "queued"), (), "the queue came out empty, or the annotator confirmed its top case"),
        Transition("answered", ("queued",), (), "every queued case is answered and reassembled"),
        Transition("closed", ("queued",), (), "closed by hand or by the round timeout; unanswered cases go back to the pool"),
    )
}


class IllegalTransition(ValueError):
    """A state change the state machine does not allow (nothing was written)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _partition(round_index: int) -> str:
    return f"round_{int(round_index):03d}"


@dataclass(frozen=True)
class RoundRecord:
    """One round's row: its state, why, and when it entered each state."""

    round_index: int
    state: str
    reason: str
    updated_at: str
    attempts: int
    entered_at: Mapping[str, str]
    facts: Mapping[str, object]

    @property
    def converged(self) -> bool:
        return self.state == "converged"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_row(self) -> dict:
        return {
            "round": int(self.round_index),
            "state": self.state,
            "reason": self.reason,
            "updated_at": self.updated_at,
            "attempts": int(self.attempts),
            **{f"{s}_at": self.entered_at.get(s, "") for s in STATES},
            **dict(self.facts),
        }


def _record(row: Mapping) -> RoundRecord:
    known = {"round", "state", "reason", "updated_at", "attempts", *(f"{s}_at" for s in STATES)}
    entered = {s: str(row.get(f"{s}_at") or "") for s in STATES if isinstance(row.get(f"{s}_at"), str) and row.get(f"{s}_at")}
    facts = {k: v for k, v in row.items() if k not in known and not (isinstance(v, float) and pd.isna(v))}
    attempts = row.get("attempts")
    return RoundRecord(
        int(row["round"]), str(row["state"]), str(row.get("reason") or ""), str(row.get("updated_at") or ""),
        1 if attempts is None or pd.isna(attempts) else int(attempts), entered, facts,
    )


def read_rounds(catalog: Catalog) -> list[RoundRecord]:
    """Every round's record, oldest first."""
    frame = catalog.read(TABLE)
    if frame.empty:
        return []
    return [_record(r) for r in frame.sort_values("round").to_dict(orient="records")]


def round_record(catalog: Catalog, round_index: int) -> RoundRecord | None:
    for rec in read_rounds(catalog):
        if rec.round_index == round_index:
            return rec
    return None


def latest_round(catalog: Catalog) -> RoundRecord | None:
    """The current round's record (the highest round opened), or None before the first."""
    rounds = read_rounds(catalog)
    return rounds[-1] if rounds else None


def current_round(catalog: Catalog) -> int:
    """The highest round opened; -1 before the first."""
    rec = latest_round(catalog)
    return -1 if rec is None else rec.round_index


def next_round(catalog: Catalog) -> int:
    """The round a round run works on: 0 first; t+1 once round t is answered, closed or converged; else t again."""
    rec = latest_round(catalog)
    if rec is None:
        return 0
    return rec.round_index + 1 if rec.state in (*FINISHED, "converged") else rec.round_index


def check_transition(rounds: Sequence[RoundRecord], round_index: int, state: str, facts: Mapping[str, object] | None = None) -> RoundRecord | None:
    """Raise :class:`IllegalTransition` unless round ``round_index`` may enter ``state`` (with ``facts``, unless None:
    not checked); returns its record (None: a new round)."""
    rule = TRANSITIONS.get(state)
    if rule is None:
        raise IllegalTransition(f"unknown round state {state!r}; known: {STATES}")
    latest = rounds[-1] if rounds else None
    old = next((r for r in rounds if r.round_index == round_index), None)
    if old is not None and old is not latest:
        raise IllegalTransition(f"round {round_index} is over ({old.state}); round {latest.round_index} is the current one")
    if old is None:
        allowed = 0 if latest is None else latest.round_index + 1 if latest.state in (*FINISHED, "converged") else None
        if round_index != allowed:
            now = "no round has started" if latest is None else f"round {latest.round_index} is {latest.state}"
            then = f"the next round to open is {allowed}" if allowed is not None else f"round {latest.round_index} must be answered, closed or converged first"
            raise IllegalTransition(f"round {round_index} cannot be {state}: {now}; {then}")
    source = NEW if old is None else old.state
    if source not in rule.sources:
        hint = " (close it first: alqa round close)" if source == "queued" and state == "opened" else ""
        raise IllegalTransition(f"round {round_index} cannot go from {source or 'no state'} to {state}; {state} is entered from {[s or 'a new round' for s in rule.sources]}{hint}")
    missing = [f for f in rule.records if facts is not None and f not in facts]
    if missing:
        raise IllegalTransition(f"round {round_index} -> {state} must record {missing}")
    return old


def require_transition(catalog: Catalog, round_index: int, state: str) -> None:
    """Refuse (:class:`IllegalTransition`) before a step does its work when its round may not then enter ``state``."""
    check_transition(read_rounds(catalog), round_index, state)


def transition(catalog: Catalog, round_index: int, state: str, reason: str = "", **facts) -> RoundRecord:
    """Move round ``round_index`` to ``state`` (with ``reason`` and the facts its transition records); return its record.

    Opening a round that exists starts a new attempt (``attempts`` + 1) and
    clears the times of the states the failed attempt had reached. The only
    write to the ``rounds`` table.
    """
    old = check_transition(read_rounds(catalog), round_index, state, facts)
    now = _now()
    if old is None:
        entered, attempts, kept = {}, 1, {}
    elif state == "opened":
        entered, attempts, kept = {}, old.attempts + 1, dict(old.facts)
    else:
        entered, attempts, kept = dict(old.entered_at), old.attempts, dict(old.facts)
    entered[state] = now
    rec = RoundRecord(int(round_index), state, reason, now, attempts, entered, {**kept, **facts})
    catalog.write(TABLE, _partition(round_index), pd.DataFrame([rec.to_row()]))
    return rec


#: the former name of :func:`transition`, kept for callers outside this repository's code; the same checks apply
record_state = transition


@dataclass(frozen=True)
class RoundDecision:
    """What the round loop does next: close a round first (``close``), then run one (``run``), or nothing (``reason`` says why)."""

    reason: str
    #: the round to run (its run opens it, or a new attempt of it); None: nothing to run now
    run: int | None = None
    #: the round to close first, with ``close_reason``; None: none
    close: int | None = None
    close_reason: str = ""
    #: only an operator starts it (round 0): the round sensor waits, ``alqa round`` runs it
    by_hand: bool = False
    #: the campaign has converged: nothing is left to do
    done: bool = False


def decide(
    record: RoundRecord | None, pending: int, queued: int, waiting: int, timeout_hours: float | None = None, now: datetime | None = None
) -> RoundDecision:
    """What happens next, from the current round's ``record``, its ``pending`` and ``queued`` cases, and the
    ``waiting`` accepted submissions no reassembled label accounts for yet."""
    if record is None:
        return RoundDecision("no round has started yet: round 0 (launch round_job, or alqa round)", run=0, by_hand=True)
    t, state = record.round_index, record.state
    if state == "converged":
        return RoundDecision(f"campaign converged in round {t}: {record.reason}", done=True)
    if state in IN_FLIGHT:
        return RoundDecision(f"round {t} is {state} (attempt {record.attempts}): its run did not finish; run it again", run=t)
    close, close_reason = None, ""
    if state == "queued":
        queued_at = record.entered_at.get("queued")
        now = now or datetime.now(timezone.utc)
        if timeout_hours is not None and queued_at and (now - datetime.fromisoformat(queued_at)).total_seconds() > timeout_hours * 3600:
            close, close_reason = t, f"timed out after {timeout_hours:g} h"
        else:
            return RoundDecision(f"round {t}: waiting for {pending} of {queued} queued cases (alqa round close ends it)" if pending
                                 else f"round {t}: every queued case is answered; waiting for its answers to be reassembled")
    if waiting:
        return RoundDecision(f"round {t}: {waiting} accepted submissions not reassembled yet", close=close, close_reason=close_reason)
    if close is not None:
        return RoundDecision(f"round {t} {close_reason}: close it, then round {t + 1}", run=t + 1, close=close, close_reason=close_reason)
    return RoundDecision(f"round {t} is {state}: round {t + 1} is next", run=t + 1)


__all__ = [
    "FINISHED",
    "IN_FLIGHT",
    "NEW",
    "STATES",
    "TABLE",
    "TRANSITIONS",
    "IllegalTransition",
    "RoundDecision",
    "RoundRecord",
    "Transition",
    "check_transition",
    "current_round",
    "decide",
    "latest_round",
    "next_round",
    "read_rounds",
    "require_transition",
    "round_record",
    "transition",
]
