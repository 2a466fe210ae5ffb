"""One pass over the annotators' inbox: validate, record in the catalog, store or quarantine.

Called by the submissions sensor once per tick; returns what it did so the
sensor can request runs (one per accepted submission, keyed by content hash,
so a restart or a duplicate file never runs anything twice). The inbox is the
queue: a tick takes its oldest ``max_per_tick`` entries, whatever their file
times, and every entry taken leaves it. A tick also stops taking entries once
it has spent ``max_tick_seconds`` (the rest wait for the next tick), so
real-size labels never bring it near Dagster's 60 s limit on a sensor
evaluation (``benchmarks/bench_submissions_tick.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

import pandas as pd

from alqa_core.annotation.intake.inbox import InboxEntry, scan_inbox, submitted_slices
from alqa_core.annotation.intake.store import move_into_store, quarantine_entry, store_label, store_record, stored_path
from alqa_core.annotation.intake.validation import Verdict, validate_entry
from alqa_core.annotation.queue.packages import package_of, package_pseudo_label
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import SubmissionConfig
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_grid
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout

log = logging.getLogger(__name__)

#: a tick looks at most this many times ``max_per_tick`` inbox entries (the rest wait for the next tick)
WAIT_FACTOR = 20


@dataclass(frozen=True)
class IntakeResult:
    accepted: tuple[dict, ...] = ()
    duplicates: tuple[dict, ...] = ()
    rejected: tuple[dict, ...] = ()
    #: the last entry taken (progress only: entries are never filtered by it)
    cursor: tuple[int, str] | None = None
    remaining: bool = False
    rows: tuple[dict, ...] = field(default=())
    #: entries a crashed tick had recorded but not yet moved out of the inbox; moved now
    recovered: tuple[str, ...] = ()
    #: entries recorded but that could not be moved out of the inbox (named with the error)
    stuck: tuple[str, ...] = ()
    #: entries left in the inbox because their case's raw scan is not ingested yet (retried next tick)
    deferred: tuple[str, ...] = ()
    #: the tick stopped taking entries because it had spent ``max_tick_seconds`` (the rest wait)
    out_of_time: bool = False


def _package_of(layout: WorkspaceLayout):
    """The package a submission answers (named, or the case's newest) and the pseudo label it handed out."""

    def package(case_id: str, package_id: str):
        found = package_of(layout, case_id, package_id or None)
        return None if found is None else (found.package_id, package_pseudo_label(found))

    return package


def _row(v: Verdict, status: str, round_index: int, stored: Path | None, label: Path | None = None) -> dict:
    meta = v.meta
    return {
        "submission_id": v.sha256[:16] if v.sha256 else v.entry.name.replace("/", "__"),
        "sha256": v.sha256,
        "case_id": meta.case_id if meta else "",
        "status": status,
        "kind": meta.kind if meta else "",
        "annotator": meta.annotator if meta else "",
        "submitted_at": meta.submitted_at if meta else "",
        "round": int(round_index),
        "entry": v.entry.name,
        "entry_mtime_ns": int(v.entry.mtime_ns),
        "stored_path": "" if stored is None else str(stored),
        "label_path": "" if label is None else str(label),
        "reasons": "\n".join(v.reasons),
        "flags": "\n".join(v.flags),
        "organ_voxels": json.dumps(v.organ_voxels),
        "annotated_slices": ",".join(str(k) for k in meta.annotated_slices) if meta else "",
        "package_id": v.package_id,
        "segments": json.dumps({str(k): n for k, n in meta.segments}) if meta else "{}",
    }


def _recorded(subs: pd.DataFrame) -> dict[tuple[str, int], dict]:
    """(entry, entry_mtime_ns) -> its catalog row, for every entry recorded so far."""
    if subs.empty or "entry_mtime_ns" not in subs:
        return {}
    rows = subs.dropna(subset=["entry_mtime_ns"]).to_dict(orient="records")
    return {(str(r["entry"]), int(r["entry_mtime_ns"])): r for r in rows}


def _finish(entry: InboxEntry, row: dict, layout: WorkspaceLayout) -> None:
    """Move the entry out of the inbox as its (committed) catalog row says."""
    if row["status"] == "rejected":
        quarantine_entry(Verdict(entry, None, tuple(str(row["reasons"]).splitlines())), layout.quarantine)
    else:
        move_into_store(entry, str(row["sha256"]), layout.submissions_store)


def process_inbox(
    layout: WorkspaceLayout,
    catalog: Catalog,
    known_cases: Collection[str],
    table: OrganTable,
    limits: SubmissionConfig,
    round_index: int,
    batch: int | None = None,
    settle_seconds: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> IntakeResult:
    """Take the oldest ``batch`` entries (default ``limits.max_per_tick``); each ends stored or quarantined.

    No entry is taken once ``limits.max_tick_seconds`` have passed on
    ``clock`` (the first always is, so a slow entry never stalls the inbox);
    the entries not taken stay in the inbox for the next tick.

    The order makes a crash at any point lose nothing and record nothing twice:

    1. validate each entry (reads only); write an accepted content's record and its label as validated (idempotent);
    2. write the batch's rows to the catalog as ONE Parquet partition: the commit;
    3. move the files out of the inbox (into the store or quarantine).

    An entry still in the inbox whose (name, file time) already has a row was
    committed by a tick that died before step 3: only step 3 is repeated.
    """
    start = clock()
    batch = limits.max_per_tick if batch is None else int(batch)
    # Entries that must wait (their case is not ingested yet) do not take a batch slot, so they never
    # stall the entries behind them; looking at WAIT_FACTOR x batch entries at most bounds a tick.
    candidates = scan_inbox(layout.inbox, None, batch * WAIT_FACTOR + 1, settle_seconds)
    subs = catalog.read("submissions")
    recorded = _recorded(subs)
    # A duplicate is the same content for the same case, slices and round (two cases can share bytes, e.g. an
    # emptied label on one grid) that was taken before; a rejected file resubmitted with --slices or --emptied is
    # new, and so is the same file re-sent in a later round: it answers that round.
    seen = set()
    if not subs.empty:
        taken = subs[subs.status.isin(["accepted", "duplicate"])]
        seen = {(str(r.case_id), str(r.sha256), submitted_slices(r), int(r.round)) for r in taken.itertuples() if isinstance(r.sha256, str) and r.sha256}
    known = set(known_cases)
    redo, new, deferred, entries = [], [], [], []
    out_of_time = False
    for entry in candidates[: batch * WAIT_FACTOR]:
        if len(redo) + len(new) == batch:
            break
        if entries and clock() - start >= limits.max_tick_seconds:
            out_of_time = True
            break
        entries.append(entry)
        prior = recorded.get((entry.name, entry.mtime_ns))
        if prior is not None:
            redo.append((entry, prior))
            continue
        try:
            v = validate_entry(
                entry,
                known,
                lambda c: read_grid(layout.raw_scan(c)),
                _package_of(layout),
                table,
                limits.max_file_mb,
                limits.volume_change_factor,
            )
        except AlqaInputError as exc:  # the case's own files (raw scan, work package) are not there yet
            log.warning("%s: left in the inbox until the case is ingested: %s", entry.name, exc)
            deferred.append(f"{entry.name}: {exc}")
            continue
        if not v.accepted:
            new.append((entry, _row(v, "rejected", round_index, None)))
            continue
        key = (v.meta.case_id, v.sha256, tuple(v.meta.annotated_slices), int(round_index))
        status = "duplicate" if key in seen else "accepted"
        seen.add(key)
        store_record(v, layout.submissions_store)
        label = store_label(v, layout) if status == "accepted" and v.label is not None else None
        new.append((entry, _row(v, status, round_index, stored_path(layout.submissions_store, v.sha256, entry.label_path), label)))
    if new:
        first = new[0][0]
        digest = hashlib.sha256(first.name.encode()).hexdigest()[:16]
        catalog.write("submissions", f"intake_{first.mtime_ns}_{digest}", pd.DataFrame([row for _, row in new]))
    stuck = []
    for entry, row in redo + new:
        try:
            _finish(entry, row, layout)
        except OSError as exc:  # recorded already; a later tick retries the move
            log.warning("%s: recorded as %s but not moved out of the inbox: %s", entry.name, row["status"], exc)
            stuck.append(f"{entry.name}: {exc}")
    remaining = len(candidates) > len(entries)
    rows = [row for _, row in new]
    by_status = {s: tuple(r for r in rows if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    cursor = entries[-1].cursor_key if entries else None
    return IntakeResult(
        by_status["accepted"],
        by_status["duplicate"],
        by_status["rejected"],
        cursor,
        remaining,
        tuple(rows),
        tuple(e.name for e, _ in redo),
        tuple(stuck),
        tuple(deferred),
        out_of_time,
    )


def verdict_of(layout: WorkspaceLayout, entry_name: str) -> dict | None:
    """The submissions row the intake recorded for an inbox entry (``alqa submit --wait``), or None while none."""
    subs = Catalog(layout.catalog).read("submissions")
    if subs.empty:
        return None
    rows = subs[subs.entry.astype(str) == entry_name]
    return None if rows.empty else {k: ("" if isinstance(v, float) and v != v else v) for k, v in rows.iloc[-1].to_dict().items()}
