"""Human QA grades: 0 success, 1 usable, 2 failure (000_3a3cb93e44d13ddd.txt §2.1.3, 001 §3.2.4).

A grade is a verdict on one case's prediction in one round. Grades are facts
a user gave the system, so they are never overwritten: every
:func:`record_grades` call writes a new Parquet partition of the catalog's
``qa_grades`` table, named ``<case>_<round>_<UTC stamp>_<uuid8>`` (one grade)
or ``batch_<UTC stamp>_<uuid8>`` (a CSV import), and refuses to replace an
existing file. A re-grade is a new row; :func:`latest_grades` resolves them:

- per ``(case_id, round)`` the row with the latest ``graded_at`` wins;
- ties on ``graded_at`` go to the worse grade (a failure is not hidden by an
  equally recent success), then the grader name, then ``grade_id``, so the
  result never depends on file or row order.

``graded_at`` is stored as an ISO 8601 string normalised to UTC with
microseconds (``2024-05-01T12:00:00.000000+00:00``), so it sorts as text the
way it sorts as time, and DuckDB/pandas time zones never get in the way.
"""

from __future__ import annotations

import csv
import operator
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.workspace import validate_case_id

TABLE = "qa_grades"
#: grade -> name
GRADE_NAMES: Mapping[int, str] = MappingProxyType({0: "success", 1: "usable", 2: "failure"})
SUCCESS, USABLE, FAILURE = 0, 1, 2
#: columns of a ``qa_grades`` row, in order
COLUMNS = ("grade_id", "case_id", "round", "grade", "grade_name", "grader", "graded_at", "note")
CSV_COLUMNS = ("case_id", "grade", "round", "grader", "graded_at", "note")


def utc_iso(when: datetime) -> str:
    """A tz-aware datetime as the stored form: UTC, microseconds, ``+00:00``."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {when.isoformat()} has no time zone")
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_graded_at(text: str) -> str:
    """An ISO 8601 time with a zone (``Z`` allowed) -> the stored UTC form; ValueError otherwise."""
    return utc_iso(datetime.fromisoformat(str(text).strip()))


def parse_grade(value: object) -> int:
    """0/1/2, or their names (``success``, ``usable``, ``failure``); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"grade {value!r} is not 0, 1 or 2")
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        grade = int(value)
    else:
        text = str(value).strip().lower()
        names = {name: g for g, name in GRADE_NAMES.items()}
        if text in names:
            return names[text]
        if text not in {"0", "1", "2"}:
            raise ValueError(f"grade {value!r} is not 0, 1, 2 (success, usable, failure)")
        grade = int(text)
    if grade not in GRADE_NAMES:
        raise ValueError(f"grade {value!r} is not 0, 1, 2 (success, usable, failure)")
    return grade


def _now_iso() -> str:
    return utc_iso(datetime.now(timezone.utc))


@dataclass(frozen=True)
class QAGrade:
    """One human verdict on one case's prediction in one round."""

    case_id: str
    round: int
    grade: int  # 0 success, 1 usable, 2 failure
    grader: str
    graded_at: str = field(default_factory=_now_iso)  # ISO 8601 with a zone; stored in UTC
    note: str = ""

    def __post_init__(self):
        validate_case_id(self.case_id)
        try:  # numpy integers (catalog rows) are fine; bools and floats are not
            round_index = operator.index(self.round) if not isinstance(self.round, bool) else -1
        except TypeError:
            round_index = -1
        if round_index < 0:
            raise AlqaInputError(None, f"QA grade for {self.case_id!r}: round must be an integer >= 0, got {self.round!r}")
        object.__setattr__(self, "round", int(round_index))
        try:
            object.__setattr__(self, "grade", parse_grade(self.grade))
            object.__setattr__(self, "graded_at", parse_graded_at(self.graded_at))
        except ValueError as exc:
            raise AlqaInputError(None, f"QA grade for {self.case_id!r}: {exc}") from exc
        if not isinstance(self.grader, str) or not self.grader.strip():
            raise AlqaInputError(None, f"QA grade for {self.case_id!r}: grader must be a non-empty name")
        if not isinstance(self.note, str):
            raise AlqaInputError(None, f"QA grade for {self.case_id!r}: note must be text")

    @property
    def grade_name(self) -> str:
        return GRADE_NAMES[self.grade]


def _stamp(graded_at: str) -> str:
    return datetime.fromisoformat(graded_at).strftime("%Y%m%dT%H%M%S%fZ")


def _frame(grades: Sequence[QAGrade]) -> pd.DataFrame:
    rows = [{"grade_id": uuid.uuid4().hex, **asdict(g), "grade_name": g.grade_name} for g in grades]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"round": "int64", "grade": "int64"})


def _write_new(catalog: Catalog, partition: str, frame: pd.DataFrame) -> Path:
    if catalog.path_of(TABLE, partition).exists():  # a uuid4 collision: never replace a grade
        raise FileExistsError(f"{catalog.path_of(TABLE, partition)}: a QA grade partition with this name exists")
    return catalog.write(TABLE, partition, frame)


def record_grade(catalog: Catalog, grade: QAGrade) -> Path:
    """Append one grade as its own immutable partition; return the Parquet path."""
    partition = f"{grade.case_id}_{grade.round:03d}_{_stamp(grade.graded_at)}_{uuid.uuid4().hex[:8]}"
    return _write_new(catalog, partition, _frame([grade]))


def record_grades(catalog: Catalog, grades: Sequence[QAGrade]) -> Path | None:
    """Append a batch of grades as one immutable partition (None when ``grades`` is empty)."""
    grades = list(grades)
    if not grades:
        return None
    partition = f"batch_{_stamp(_now_iso())}_{uuid.uuid4().hex[:8]}"
    return _write_new(catalog, partition, _frame(grades))


def latest_grade_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ``(case_id, round)``: the latest grade (tie-break in the module doc).

    Adds ``n_grades`` (how many grades that case and round received). The
    input is not modified; the output is sorted by ``case_id``, ``round``.
    """
    if len(frame) == 0:  # no grades, whatever columns the empty frame has
        return pd.DataFrame(columns=[*COLUMNS, "n_grades"])
    needed = ("case_id", "round", "grade", "graded_at")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise AlqaInputError(None, f"QA grades need columns {list(needed)}; missing {missing}")
    out = frame.copy()
    for col, default in (("grader", ""), ("grade_id", "")):
        if col not in out.columns:
            out[col] = default
    out["_t"] = pd.to_datetime(out["graded_at"], utc=True, format="ISO8601")
    out["n_grades"] = out.groupby(["case_id", "round"])["grade"].transform("size").astype("int64")
    out = out.sort_values(["case_id", "round", "_t", "grade", "grader", "grade_id"], kind="mergesort")
    out = out.drop_duplicates(["case_id", "round"], keep="last").drop(columns="_t")
    return out.reset_index(drop=True)


def latest_grades(catalog: Catalog) -> pd.DataFrame:
    """The catalog's ``qa_grades``, resolved to the latest grade per ``(case_id, round)``."""
    return latest_grade_rows(catalog.read(TABLE))


# ----------------------------------------------------------------- CSV import


def _grades_from_rows(
    path: Path, rows: Iterable[tuple[int, Mapping[str, str | None]]], grader_default: str | None, round_default: int | None, imported_at: str
) -> list[QAGrade]:
    grades, seen = [], {}
    for line, row in rows:
        if None in row:
            raise AlqaInputError(path, f"line {line}: more fields than the header has columns")
        where = f"line {line}"
        values = {k: (v or "").strip() for k, v in row.items() if k is not None}
        case_id = values.get("case_id", "")
        try:
            validate_case_id(case_id)
        except AlqaInputError as exc:
            raise AlqaInputError(path, f"{where}: {exc.reason}") from None
        try:
            grade = parse_grade(values.get("grade", ""))
        except ValueError as exc:
            raise AlqaInputError(path, f"{where}: {exc}") from None
        round_text = values.get("round", "")
        if round_text:
            if not re.fullmatch(r"[0-9]+", round_text):
                raise AlqaInputError(path, f"{where}: round {round_text!r} is not an integer >= 0")
            round_index = int(round_text)
        elif round_default is not None:
            round_index = int(round_default)
        else:
            raise AlqaInputError(path, f"{where}: no round (add a 'round' column or pass round_default)")
        grader = values.get("grader", "") or (grader_default or "")
        if not grader:
            raise AlqaInputError(path, f"{where}: no grader (add a 'grader' column or pass grader_default)")
        try:
            graded_at = parse_graded_at(values["graded_at"]) if values.get("graded_at") else imported_at
        except ValueError as exc:
            raise AlqaInputError(path, f"{where}: graded_at {values['graded_at']!r} is not an ISO 8601 time with a zone ({exc})") from None
        key = (case_id, round_index, graded_at)
        if key in seen:
            raise AlqaInputError(path, f"{where}: case {case_id!r} round {round_index} is graded twice at {graded_at} (also line {seen[key]})")
        seen[key] = line
        grades.append(QAGrade(case_id, round_index, grade, grader, graded_at, values.get("note", "")))
    return grades


def import_grades_csv(
    path: str | Path, catalog: Catalog, grader_default: str | None = None, *, round_default: int | None = None
) -> int:
    """Validate a CSV of grades, then append them all as one batch; return how many.

    Columns: ``case_id`` and ``grade`` (0/1/2 or success/usable/failure) are
    required; ``round``, ``grader``, ``graded_at`` (ISO 8601 with a zone;
    default: the import time) and ``note`` are optional (``round_default`` and
    ``grader_default`` fill empty ones). Any bad row fails the whole file with
    an :class:`AlqaInputError` naming the file and the line; nothing is written.
    """
    path = Path(path)
    if round_default is not None and (isinstance(round_default, bool) or not isinstance(round_default, int) or round_default < 0):
        raise AlqaInputError(path, f"round_default must be an integer >= 0, got {round_default!r}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise AlqaInputError(path, "line 1: empty file, expected a header with case_id and grade")
            unknown = [h for h in header if h not in CSV_COLUMNS]
            if unknown:
                raise AlqaInputError(path, f"line 1: unknown columns {unknown}; allowed: {list(CSV_COLUMNS)}")
            missing = [c for c in ("case_id", "grade") if c not in header]
            if missing:
                raise AlqaInputError(path, f"line 1: missing required columns {missing}")
            if len(set(header)) != len(header):
                raise AlqaInputError(path, f"line 1: repeated columns in {header}")
            reader.fieldnames = header
            rows = ((reader.line_num, row) for row in reader)
            grades = _grades_from_rows(path, rows, grader_default, round_default, _now_iso())
    except FileNotFoundError as exc:
        raise AlqaInputError(path, "QA grades CSV does not exist") from exc
    except UnicodeDecodeError as exc:
        raise AlqaInputError(path, f"not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise AlqaInputError(path, f"malformed CSV: {exc}") from exc
    record_grades(catalog, grades)
    return len(grades)


__all__ = [
    "COLUMNS",
    "CSV_COLUMNS",
    "FAILURE",
    "GRADE_NAMES",
    "SUCCESS",
    "TABLE",
    "USABLE",
    "QAGrade",
    "import_grades_csv",
    "latest_grade_rows",
    "latest_grades",
    "parse_grade",
    "parse_graded_at",
    "record_grade",
    "record_grades",
]
