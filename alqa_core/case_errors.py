"""Per-case failures: a bad scan (or a case no member predicts) is recorded with its file and reason, and the batch goes on.

Table ``case_errors``, one partition per (case, stage): a failure writes the
row, a later success at that stage writes the partition empty. Open errors
are what ``alqa status``, the UI metadata and the rounds read: a round runs
over the cases without an open ingest error. The row keeps a fingerprint of
the source file (size and modification time), so the new-cases sensor can
retry a case once its file has been fixed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError

TABLE = "case_errors"
COLUMNS = ("case_id", "stage", "file", "reason", "recorded_at", "source", "source_fingerprint")
#: stages whose failure means the case is not ingested
INGEST_STAGES = ("raw_scans", "original_labels", "preprocessed_volumes")


def source_fingerprint(path: str | Path | None) -> str:
    """``size:mtime_ns`` of a file, or of the newest file in a folder (a DICOM series); "" if it is gone."""
    if path is None:
        return ""
    path = Path(path)
    try:
        if path.is_dir():
            stats = [e.stat() for e in os.scandir(path) if e.is_file()]
            return f"{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}:{len(stats)}"
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return ""


def _partition(case_id: str, stage: str) -> str:
    return f"{case_id}__{stage}"


def record_case_error(catalog: Catalog, case_id: str, stage: str, file: str | Path | None, reason: str, source: str | Path | None = None) -> dict:
    row = {
        "case_id": case_id,
        "stage": stage,
        "file": "" if file is None else str(file),
        "reason": reason,
        "recorded_at": datetime.now(timezone.utc).isoformat(),
        "source": "" if source is None else str(source),
        "source_fingerprint": source_fingerprint(source),
    }
    catalog.write(TABLE, _partition(case_id, stage), pd.DataFrame([row]))
    return row


def clear_case_error(catalog: Catalog, case_id: str, stage: str) -> None:
    """The case passed ``stage``: its error there, if any, is closed (the partition is written empty)."""
    if catalog.path_of(TABLE, _partition(case_id, stage)).exists():
        catalog.write(TABLE, _partition(case_id, stage), pd.DataFrame(columns=list(COLUMNS)))


@dataclass(frozen=True)
class CaseBatch:
    """One stage over a batch of cases: what each case that passed returned, and why each failed case failed."""

    done: Mapping[str, Any]
    failed: Mapping[str, dict]


def run_per_case(
    catalog: Catalog, stage: str, case_ids: Iterable[str], work: Callable[[str], Any], source_of: Callable[[str], Any] | None = None
) -> CaseBatch:
    """``work(case_id)`` for every case; a case's AlqaInputError is recorded (file, reason, source) and the others go on.

    Only bad input is isolated this way: any other exception is a bug and
    stops the batch. A case that passes closes its open error at ``stage``.
    """
    done, failed = {}, {}
    for case_id in case_ids:
        try:
            done[case_id] = work(case_id)
        except AlqaInputError as exc:
            source = source_of(case_id) if source_of is not None else None
            failed[case_id] = record_case_error(catalog, case_id, stage, exc.path, exc.reason, source)
            continue
        clear_case_error(catalog, case_id, stage)
    return CaseBatch(done, failed)


def open_case_errors(catalog: Catalog, stages: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The open errors, one row per (case, stage), oldest first."""
    frame = catalog.read(TABLE)
    if frame.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    if stages is not None:
        frame = frame[frame.stage.isin(stages)]
    return frame.sort_values(["recorded_at", "case_id"]).reset_index(drop=True)


def failed_cases(catalog: Catalog, stages: tuple[str, ...] | None = INGEST_STAGES) -> set[str]:
    """Cases with an open error at one of ``stages`` (default: not ingested)."""
    return set(open_case_errors(catalog, stages).case_id)


def fixed_cases(catalog: Catalog, known: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(case, new fingerprint) for every case refused at ingest whose source file changed since: the cases to ingest again.

    The retry rule of ``alqa ingest`` and the new-cases sensor alike; ``known``
    (the campaign's cases) leaves out cases no dataset lists any more.
    """
    keep = None if known is None else set(known)
    out = set()
    for r in open_case_errors(catalog, INGEST_STAGES).itertuples():
        now = source_fingerprint(r.source) if r.source else ""
        if now and now != r.source_fingerprint and (keep is None or r.case_id in keep):
            out.add((str(r.case_id), now))
    return sorted(out)


__all__ = ["CaseBatch", "run_per_case", "COLUMNS", "INGEST_STAGES", "TABLE", "clear_case_error", "failed_cases", "fixed_cases", "open_case_errors", "record_case_error", "source_fingerprint"]
