"""What became of an annotator's submissions: waiting in the inbox, accepted, accepted with flags, or refused, and why.

The submissions sensor records its verdict on each inbox entry as a row of
the catalog's ``submissions`` table (reasons reject, flags only warn); an
entry still in the inbox has no verdict yet. ``alqa serve`` shows each
annotator their own submissions with these states, so a refusal and its
reason reach the person who can fix it (a refused case is open again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from alqa_core.annotation.intake.inbox import read_meta, scan_inbox
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError

#: a submission's state as the annotator sees it
WAITING, ACCEPTED, FLAGGED, REFUSED, DUPLICATE = "waiting", "accepted", "accepted with flags", "refused", "duplicate"
_COLUMNS = ("entry", "case_id", "package_id", "kind", "status", "reasons", "flags", "submitted_at", "round")


@dataclass(frozen=True)
class SubmissionState:
    """One submission of one annotator and the sensor's verdict on it (none yet while ``waiting``)."""

    entry: str
    case_id: str
    package_id: str
    kind: str  # revised | confirmed
    state: str  # waiting | accepted | accepted with flags | refused | duplicate
    submitted_at: str
    round_index: int | None = None  # the round it was taken in (None while waiting)
    reasons: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def decided(self) -> bool:
        return self.state != WAITING

    def as_dict(self) -> dict:
        return {"entry": self.entry, "case_id": self.case_id, "package_id": self.package_id, "kind": self.kind, "state": self.state,
                "submitted_at": self.submitted_at, "round": self.round_index, "reasons": list(self.reasons), "flags": list(self.flags)}


def _lines(text) -> tuple[str, ...]:
    return tuple(s for s in str(text or "").splitlines() if s.strip())


def _state(status: str, flags: tuple[str, ...]) -> str:
    if status == "rejected":
        return REFUSED
    if status == "duplicate":
        return DUPLICATE
    return FLAGGED if flags else ACCEPTED


def decided_submissions(catalog: Catalog, annotator: str, con: duckdb.DuckDBPyConnection | None = None) -> list[SubmissionState]:
    """The sensor's verdicts on ``annotator``'s submissions (one DuckDB read of the ``submissions`` table, this annotator's rows)."""
    if not catalog.partitions("submissions"):
        return []
    own = con is None
    con = duckdb.connect(":memory:") if own else con
    try:
        files = str(Path(catalog.root) / "submissions" / "[!.]*.parquet")
        present = {d[0] for d in con.execute("SELECT * FROM read_parquet($1, union_by_name=true) LIMIT 0", [files]).description}
        if "annotator" not in present:
            return []
        exprs = ", ".join(c if c in present else "NULL" for c in _COLUMNS)
        rows = con.execute(f"SELECT {exprs} FROM read_parquet($1, union_by_name=true) WHERE annotator = $2", [files, annotator]).fetchall()
    finally:
        if own:
            con.close()
    out = []
    for row in rows:
        r = dict(zip(_COLUMNS, row))
        flags = _lines(r["flags"])
        out.append(SubmissionState(str(r["entry"] or ""), str(r["case_id"] or ""), str(r["package_id"] or ""), str(r["kind"] or ""),
                                   _state(str(r["status"] or ""), flags), str(r["submitted_at"] or ""),
                                   None if r["round"] is None else int(r["round"]), _lines(r["reasons"]), flags))
    return out


def waiting_submissions(inbox: Path, annotator: str) -> list[SubmissionState]:
    """``annotator``'s complete entries still in the inbox (the sensor has not taken them yet)."""
    out = []
    for entry in scan_inbox(Path(inbox), settle_seconds=0.0):
        try:
            meta = read_meta(entry)
        except AlqaInputError:
            continue  # unreadable sidecar: the sensor quarantines it with its reason
        if meta.annotator == annotator:
            out.append(SubmissionState(entry.name, meta.case_id, meta.package, meta.kind, WAITING, meta.submitted_at))
    return out


def annotator_submissions(catalog: Catalog, inbox: Path, annotator: str, con: duckdb.DuckDBPyConnection | None = None) -> tuple[SubmissionState, ...]:
    """Every submission of ``annotator``, newest first: those waiting in the inbox and those the sensor decided."""
    found = waiting_submissions(inbox, annotator) + decided_submissions(catalog, annotator, con)
    return tuple(sorted(found, key=lambda s: (s.submitted_at, s.entry), reverse=True))


def latest_by_case(submissions: tuple[SubmissionState, ...]) -> dict[str, SubmissionState]:
    """Each case's newest submission (``submissions`` newest first, as :func:`annotator_submissions` gives them)."""
    latest: dict[str, SubmissionState] = {}
    for s in submissions:
        latest.setdefault(s.case_id, s)
    return latest


__all__ = [
    "ACCEPTED",
    "DUPLICATE",
    "FLAGGED",
    "REFUSED",
    "WAITING",
    "SubmissionState",
    "annotator_submissions",
    "decided_submissions",
    "latest_by_case",
    "waiting_submissions",
]
