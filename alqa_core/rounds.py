"""The round-state table: one row per round in the catalog, the state the platform moved it to, when and why.

A round goes ``opened`` (its training set is fixed) -> ``trained`` (its
checkpoints exist, or training was skipped and the row says why) ->
``predicted`` (every ingested case has predictions and attention) ->
``queued`` (its work packages are written) -> ``answered`` (every queued case
is answered and reassembled) or ``closed`` (by ``alqa round close`` or the
round timeout; unanswered cases go back to the pool), or ``converged`` (the
top case was confirmed, or the queue came out empty).

The assets write the transitions and the sensors and ``alqa status`` read
them: nothing infers a round's state from missing files. The row keeps the
time of every state it went through (``<state>_at``) and how many times the
round was opened (``attempts``: a failed round is retried).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

import pandas as pd

from alqa_core.catalog import Catalog

TABLE = "rounds"
STATES = ("opened", "trained", "predicted", "queued", "answered", "closed", "converged")
#: states after which the next round may start
FINISHED = ("answered", "closed")
#: states in which a round's own run is still to finish (a failed run is retried)
IN_FLIGHT = ("opened", "trained", "predicted")


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


def record_state(catalog: Catalog, round_index: int, state: str, reason: str = "", **facts) -> RoundRecord:
    """Move round ``round_index`` to ``state`` (with ``reason`` and facts such as counts) and return its record.

    Opening a round that exists starts a new attempt (``attempts`` + 1) and
    clears the times of the states the failed attempt had reached.
    """
    if state not in STATES:
        raise ValueError(f"unknown round state {state!r}; known: {STATES}")
    old = round_record(catalog, round_index)
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


__all__ = [
    "FINISHED",
    "IN_FLIGHT",
    "STATES",
    "TABLE",
    "RoundRecord",
    "current_round",
    "latest_round",
    "read_rounds",
    "record_state",
    "round_record",
]
