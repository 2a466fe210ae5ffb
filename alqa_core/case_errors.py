"""Per-case failures: a bad scan (or a case no member predicts) is recorded with its file and reason, and the batch goes on.

Table ``case_errors``, one partition per (case, stage): a failure writes the
row, a later success at that stage writes the partition empty. Open errors
are what ``alqa status``, the UI metadata and the rounds read: a round runs
over the cases without an open ingest error. The row keeps a fingerprint of
the source file (size and modification time), so the new-cases sensor can
retry a case once its file has been fixed.

An ensemble member whose file cannot be used for one case is a row of its own
(partition per case, stage and member; ``member`` names it, ``went_on_with``
the members the case went on with): the case is not refused, so such rows are
:func:`member_failures`, never :func:`open_case_errors`. :func:`case_counts`
is the one count of found, ingested and refused cases that ``alqa status``
and every command's summary print.
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
COLUMNS = ("case_id", "stage", "file", "reason", "recorded_at", "source", "source_fingerprint", "member", "went_on_with")
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


def _partition(case_id: str, stage: str, member: str = "") -> str:
    return f"{case_id}__{stage}__{member}" if member else f"{case_id}__{stage}"


def record_case_error(
    catalog: Catalog, case_id: str, stage: str, file: str | Path | None, reason: str, source: str | Path | None = None,
    member: str = "", went_on_with: Iterable[str] = (),
) -> dict:
    """The case's open error at ``stage`` (refused), or with ``member``: that member's failure for the case, which went
    on with the members ``went_on_with``."""
    row = {
        "case_id": case_id,
        "stage": stage,
        "file": "" if file is None else str(file),
        "reason": reason,
        "recorded_at": datetime.now(timezone.utc).isoformat(),
        "source": "" if source is None else str(source),
        "source_fingerprint": source_fingerprint(source),
        "member": member,
        "went_on_with": ", ".join(went_on_with),
    }
    catalog.write(TABLE, _partition(case_id, stage, member), pd.DataFrame([row]))
    return row


def clear_case_error(catalog: Catalog, case_id: str, stage: str, member: str = "") -> None:
    """The case passed ``stage`` (or ``member`` did, for it): its error there, if any, is closed (the partition is written empty)."""
    if catalog.path_of(TABLE, _partition(case_id, stage, member)).exists():
        catalog.write(TABLE, _partition(case_id, stage, member), pd.DataFrame(columns=list(COLUMNS)))


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


def _open_rows(catalog: Catalog, stages: tuple[str, ...] | None, members: bool, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    frame = catalog.read(TABLE) if frame is None else frame
    if frame.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *COLUMNS])))  # rows written before a column existed
    frame["member"] = frame["member"].fillna("").astype(str)
    frame["went_on_with"] = frame["went_on_with"].fillna("").astype(str)
    frame = frame[(frame.member != "") == members]
    if stages is not None:
        frame = frame[frame.stage.isin(stages)]
    return frame.sort_values(["recorded_at", "case_id"]).reset_index(drop=True)


def open_case_errors(catalog: Catalog, stages: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The open errors (cases refused), one row per (case, stage), oldest first."""
    return _open_rows(catalog, stages, members=False)


def member_failures(catalog: Catalog) -> pd.DataFrame:
    """The open member failures: one row per (case, stage, member) whose file could not be used, and the case went on
    with the members ``went_on_with``; oldest first."""
    return _open_rows(catalog, None, members=True)


def read_case_errors(catalog: Catalog) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`open_case_errors`, :func:`member_failures`) from one read of the table."""
    frame = catalog.read(TABLE)
    return _open_rows(catalog, None, False, frame), _open_rows(catalog, None, True, frame)


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


@dataclass(frozen=True)
class CaseCounts:
    """The campaign's cases as the catalog has them: ingested, refused at ingest (an open error), and, when the
    datasets' cases are given, found there but not tried yet. They add up to the cases found."""

    ingested: tuple[str, ...]
    refused: tuple[str, ...]
    not_tried: tuple[str, ...] = ()

    @property
    def found(self) -> int:
        return len(self.ingested) + len(self.refused) + len(self.not_tried)

    def render(self) -> str:
        """``7 cases found: 5 ingested, 2 refused`` (and ``, 1 not ingested yet``): the line every summary starts from."""
        rest = f", {len(self.not_tried)} not ingested yet" if self.not_tried else ""
        return f"{self.found} cases found: {len(self.ingested)} ingested, {len(self.refused)} refused{rest}"


def case_counts(catalog: Catalog, found: Iterable[str] | None = None, errors: pd.DataFrame | None = None) -> CaseCounts:
    """Ingested cases (a ``cases`` row and no open ingest error) and refused ones (an open ingest error; a case whose
    scan was read but whose label was refused has a ``cases`` row too). With ``found`` (the datasets' cases), the
    cases the datasets no longer list are left out and those never tried are counted. ``errors``: the open errors,
    when the caller has read them already."""
    cases = catalog.read("cases")
    refused = failed_cases(catalog) if errors is None else set(errors[errors.stage.isin(INGEST_STAGES)].case_id)
    ingested = {str(c) for c in (cases.case_id if not cases.empty else ())} - refused
    if found is not None:
        keep = {str(c) for c in found}
        ingested, refused = ingested & keep, refused & keep
        return CaseCounts(tuple(sorted(ingested)), tuple(sorted(refused)), tuple(sorted(keep - ingested - refused)))
    return CaseCounts(tuple(sorted(ingested)), tuple(sorted(refused)))


__all__ = ["CaseBatch", "CaseCounts", "run_per_case", "COLUMNS", "INGEST_STAGES", "TABLE", "case_counts", "clear_case_error", "failed_cases", "fixed_cases", "member_failures", "open_case_errors", "read_case_errors", "record_case_error", "source_fingerprint"]
