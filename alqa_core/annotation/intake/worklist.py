"""An annotator's worklist: the current round's queue in priority order, what is answered or waiting, and the next case.

``alqa serve`` answers MONAI Label's "Next sample" and the web worklist from
this one view. A case is *answered* once a submission for it was accepted in
the round (as :func:`alqa_core.annotation.labelled.rounds.round_state` counts it), and
*waiting* while a submission for it sits in the inbox (the sensor has not
taken it yet). The next case for an annotator is the first one in priority
order that is neither, preferring cases no other annotator holds right now
(``held_by``: the server's short leases, so two annotators opening "Next
sample" together get different cases); when every open case is held, the
first held one is given rather than none (a second review beats an idle
annotator). Only a ``queued`` round is served: a closed, answered or
converged round, or the next round still being computed, has nothing to hand out.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping

import duckdb
import numpy as np

from alqa_core.annotation.intake.inbox import read_meta, scan_inbox
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError


@dataclass(frozen=True)
class WorkItem:
    """One queued case of the round, with who answered it and who has a submission waiting."""

    case_id: str
    round_index: int
    position: int
    package_id: str
    organs: tuple[str, ...]
    score: float
    answered_by: tuple[str, ...] = ()
    waiting_by: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        return bool(self.answered_by)

    @property
    def open(self) -> bool:
        return not self.answered_by and not self.waiting_by


@dataclass(frozen=True)
class Worklist:
    round_index: int  # -1 before the first round
    state: str  # "" before the first round
    items: tuple[WorkItem, ...]

    @property
    def serving(self) -> bool:
        """Only a queued round hands out cases."""
        return self.state == "queued"

    @cached_property
    def completed(self) -> int:
        return sum(1 for i in self.items if i.answered)

    def item(self, case_id: str) -> WorkItem | None:
        return next((i for i in self.items if i.case_id == case_id), None)


def _organs(value, seen: dict) -> tuple[str, ...]:
    """'liver,pancreas' (or a list) -> a tuple, shared between the many cases with the same organs."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    key = value if isinstance(value, str) else ",".join(map(str, value))
    found = seen.get(key)
    if found is None:
        found = seen[key] = tuple(o for o in key.split(",") if o)
    return found


def inbox_waiting(inbox: Path) -> dict[str, set[str]]:
    """Case -> annotators with a complete submission still in the inbox (hand drops included, settled or not)."""
    waiting: dict[str, set[str]] = {}
    for entry in scan_inbox(Path(inbox), settle_seconds=0.0):
        try:
            meta = read_meta(entry)
        except AlqaInputError:
            continue  # the sensor quarantines it; it answers nothing
        waiting.setdefault(meta.case_id, set()).add(meta.annotator)
    return waiting


def _select(con: duckdb.DuckDBPyConnection, catalog: Catalog, table: str, columns: tuple[str, ...], where: str, params: list, tail: str = "") -> list[dict]:
    """``columns`` of ``table``'s rows matching ``where`` (a column the table lacks reads as None; a list column as 'a,b')."""
    if not catalog.partitions(table):
        return []
    files = str(Path(catalog.root) / table / "[!.]*.parquet")
    types = {d[0]: str(d[1]) for d in con.execute("SELECT * FROM read_parquet($1, union_by_name=true) LIMIT 0", [files]).description}
    if any(c not in types for c in re.findall(r"\b([a-z_]+) [=<>]", where)):
        return []  # the table predates the columns the filter needs: no row matches
    exprs = [
        (f"array_to_string({c}, ',')" if types[c].endswith("[]") or types[c].upper().startswith("LIST") else c) if c in types else "NULL"
        for c in columns
    ]
    rows = con.execute(f"SELECT {', '.join(exprs)} FROM read_parquet($1, union_by_name=true) WHERE {where} {tail}", [files, *params]).fetchall()
    return [dict(zip(columns, row)) for row in rows]


def read_worklist(catalog: Catalog, inbox: Path, con: duckdb.DuckDBPyConnection | None = None) -> Worklist:
    """The current round's queue, top first, each case with its answers and waiting submissions.

    Three tables (``rounds``, ``queue``, ``submissions``) are read in one DuckDB
    connection (``con``: a caller's, reused; opening one costs more than the
    reads), only the current round's rows. :func:`worklist_fingerprint` lets a
    server skip the read while nothing changed (``benchmarks/bench_serve.py``).
    """
    own = con is None
    con = duckdb.connect(":memory:") if own else con
    try:
        rounds = _select(con, catalog, "rounds", ("round", "state"), "TRUE", [], "ORDER BY round DESC LIMIT 1")
        if not rounds:
            return Worklist(-1, "", ())
        t, state = int(rounds[0]["round"]), str(rounds[0]["state"])
        queue = _select(con, catalog, "queue", ("case_id", "position", "package_id", "organs", "score"), "round = $2", [t], "ORDER BY position")
        subs = _select(con, catalog, "submissions", ("case_id", "annotator"), "status = 'accepted' AND round = $2", [t])
    finally:
        if own:
            con.close()
    answered: dict[str, set[str]] = {}
    for row in subs:
        answered.setdefault(str(row["case_id"]), set()).add(str(row["annotator"] or ""))
    waiting = inbox_waiting(inbox) if queue else {}
    nan, seen = float("nan"), {}
    items = tuple(
        WorkItem(
            r["case_id"], t, r["position"], r["package_id"] or "", _organs(r["organs"], seen), nan if r["score"] is None else float(r["score"]),
            tuple(sorted(answered[r["case_id"]])) if r["case_id"] in answered else (),
            tuple(sorted(waiting[r["case_id"]])) if r["case_id"] in waiting else (),
        )
        for r in queue
    )
    return Worklist(t, state, items)


def worklist_fingerprint(catalog: Catalog, inbox: Path, settle_seconds: float = 0.5) -> tuple | None:
    """What :func:`read_worklist` depends on, as folder times: equal fingerprints, equal worklists.

    Every catalog write and every inbox entry creates or renames a file in
    its folder, which moves the folder's time. None when a folder changed
    within ``settle_seconds`` (two writes inside one tick of the file
    system's clock would look like one), so a caller re-reads then.
    """
    folders = [Path(catalog.root) / t for t in ("rounds", "queue", "submissions")] + [Path(inbox)]
    if Path(inbox).is_dir():
        folders += [Path(e.path) for e in os.scandir(inbox) if e.is_dir() and not e.name.startswith(".")]
    stamps = []
    for folder in folders:
        try:
            stamps.append((str(folder), folder.stat().st_mtime_ns))
        except FileNotFoundError:
            stamps.append((str(folder), 0))
    newest = max(ns for _, ns in stamps)
    if time.time_ns() - newest < settle_seconds * 1e9:
        return None
    return tuple(stamps)


def next_item(worklist: Worklist, annotator: str, held_by: Mapping[str, str] | None = None) -> WorkItem | None:
    """The next case for ``annotator``: the first open one no one else holds, else the first open one; None when none."""
    if not worklist.serving:
        return None
    held_by = held_by or {}
    first_open = None
    for item in worklist.items:  # one pass, stopping at the first open case nobody else holds
        if not item.open:
            continue
        if held_by.get(item.case_id, annotator) == annotator:
            return item
        first_open = first_open or item
    return first_open


__all__ = ["WorkItem", "Worklist", "inbox_waiting", "next_item", "read_worklist", "worklist_fingerprint"]
