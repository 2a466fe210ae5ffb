"""One pass over the annotators' inbox: validate, store or quarantine, record in the catalog.

Called by the submissions sensor with its cursor; returns what it did so the
sensor can request runs (one per accepted submission, keyed by content hash,
so a restart or a duplicate file never runs anything twice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.config import SubmissionConfig
from alqa_core.io.nifti import read_grid, read_label
from alqa_core.organs import OrganTable
from alqa_core.submissions import Verdict, quarantine_entry, scan_inbox, store_accepted, validate_entry
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class IntakeResult:
    accepted: tuple[dict, ...] = ()
    duplicates: tuple[dict, ...] = ()
    rejected: tuple[dict, ...] = ()
    cursor: tuple[int, str] | None = None
    remaining: bool = False
    rows: tuple[dict, ...] = field(default=())


def _pseudo_of(layout: WorkspaceLayout, round_index: int):
    def pseudo(case_id: str):
        path = layout.work_package(round_index, case_id) / "pseudo_label.nii.gz"
        return read_label(path) if round_index >= 0 and path.exists() else None

    return pseudo


def _row(v: Verdict, status: str, round_index: int, stored: Path | None) -> dict:
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
        "stored_path": "" if stored is None else str(stored),
        "reasons": "\n".join(v.reasons),
        "flags": "\n".join(v.flags),
        "organ_voxels": json.dumps(v.organ_voxels),
    }


def process_inbox(
    layout: WorkspaceLayout,
    catalog: Catalog,
    known_cases: Collection[str],
    table: OrganTable,
    limits: SubmissionConfig,
    round_index: int,
    after: tuple[int, str] | None = None,
    batch: int = 50,
    settle_seconds: float = 10.0,
) -> IntakeResult:
    """Validate up to ``batch`` entries after ``after``; every entry ends stored or quarantined."""
    entries = scan_inbox(layout.inbox, after, batch + 1, settle_seconds)
    remaining = len(entries) > batch
    entries = entries[:batch]
    known = set(known_cases)
    seen = set(catalog.read("submissions").get("sha256", pd.Series(dtype=str)).dropna())
    accepted, duplicates, rejected, rows = [], [], [], []
    for entry in entries:
        v = validate_entry(
            entry,
            known,
            lambda c: read_grid(layout.raw_scan(c)),
            _pseudo_of(layout, round_index),
            table,
            limits.max_file_mb,
            limits.volume_change_factor,
        )
        if not v.accepted:
            quarantine_entry(v, layout.quarantine)
            row = _row(v, "rejected", round_index, None)
            rejected.append(row)
        elif v.sha256 in seen:
            row = _row(v, "duplicate", round_index, store_accepted(v, layout.submissions_store))
            duplicates.append(row)
        else:
            seen.add(v.sha256)
            row = _row(v, "accepted", round_index, store_accepted(v, layout.submissions_store))
            accepted.append(row)
        catalog.write("submissions", f"{row['status']}_{entry.mtime_ns}_{row['submission_id']}", pd.DataFrame([row]))
        rows.append(row)
    cursor = entries[-1].cursor_key if entries else after
    return IntakeResult(tuple(accepted), tuple(duplicates), tuple(rejected), cursor, remaining, tuple(rows))
