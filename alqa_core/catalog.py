"""The catalog: tabular facts as Parquet files, one per (table, partition), read through DuckDB.

Layout: ``<root>/<table>/<partition>.parquet``. A writer only ever replaces
its own partition file, atomically (temporary file, then rename), so any
number of concurrent materializations write without a shared database file
and hence without DuckDB lock errors. Readers open an in-memory DuckDB
connection with one view per table over ``read_parquet('<table>/*.parquet')``,
which works the same on a local folder and on object storage.

Append-only tables (submissions, QA grades) use a fresh partition name per
row batch (e.g. the submission id), so history is never overwritten.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import duckdb
import pandas as pd

from alqa_core.io.atomic import atomic_path

#: table -> the columns every row must have (more columns are allowed).
TABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cases": ("case_id", "dataset", "split"),
        "geometry": ("case_id",),
        "attention_case": ("case_id", "round"),
        "attention_organ": ("case_id", "round", "organ"),
        "attention_slice": ("case_id", "round", "organ", "slice"),
        "priority": ("round", "rank", "case_id"),
        "queue": ("round", "case_id"),
        "submissions": ("submission_id", "case_id", "status"),
        "revisions": ("case_id", "submission_id", "path"),
        "provenance": ("case_id", "organ", "source"),
        "qa_grades": ("case_id", "grade", "grader"),
        "qa_scores": ("case_id", "round", "score"),
        "metrics": ("case_id", "organ"),
        "rounds": ("round", "state"),
        "effort": ("submission_id", "case_id"),
        "checkpoints": ("arch", "round"),
        "training_set": ("round", "case_id"),
        "simulation": ("strategy", "round"),
        "case_errors": ("case_id", "stage", "reason"),
    }
)

_PARTITION_RE = re.compile(r"^[A-Za-z0-9_.=-]{1,200}$")


@dataclass(frozen=True)
class Catalog:
    """A folder of Parquet tables. Cheap to construct; holds no connection."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- writing ---------------------------------------------------------
    def path_of(self, table: str, partition: str) -> Path:
        _check_table(table)
        if not _PARTITION_RE.match(partition) or partition.startswith("."):
            raise ValueError(f"invalid catalog partition name {partition!r} for table {table!r}")
        return self.root / table / f"{partition}.parquet"

    def write(self, table: str, partition: str, frame: pd.DataFrame) -> Path:
        """Replace ``table``'s ``partition`` with ``frame`` (atomically).

        An empty frame is a partition with no rows (an empty queue, a case
        with no attention): it is written as a zero-row file with the table's
        columns, so "written, empty" stays distinct from "never written".
        DuckDB's ``union_by_name`` unifies its null-typed columns with the
        other partitions' types.
        """
        _check_table(table)
        if frame.empty:
            frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *TABLES[table]])))
        missing = [c for c in TABLES[table] if c not in frame.columns]
        if missing:
            raise ValueError(f"catalog table {table!r} needs columns {missing}; got {list(frame.columns)}")
        target = self.path_of(table, partition)
        with atomic_path(target) as tmp:
            frame.reset_index(drop=True).to_parquet(tmp, index=False)
        return target

    # -- reading ---------------------------------------------------------
    def partitions(self, table: str) -> list[str]:
        _check_table(table)
        folder = self.root / table
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(".parquet")] for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def _glob(self, table: str) -> str:
        return str(self.root / table / "[!.]*.parquet")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view per non-empty table."""
        con = duckdb.connect(":memory:")
        for table in TABLES:
            if self.partitions(table):
                con.execute(
                    f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{self._glob(table)}', union_by_name=true)"
                )
        return con

    def read(self, table: str, partitions: str | None = None) -> pd.DataFrame:
        """All rows of ``table``, or of the partitions whose names match the glob ``partitions``
        (e.g. ``*_round_003``: one round's files, however many rounds the table holds; each file
        costs a read, ~0.3 ms). An empty frame with the required columns if none."""
        _check_table(table)
        names = self.partitions(table)
        if partitions is not None:
            names = fnmatch.filter(names, partitions)
        if not names:
            return pd.DataFrame(columns=list(TABLES[table]))
        with duckdb.connect(":memory:") as con:
            if partitions is None:
                return con.execute(f"SELECT * FROM read_parquet('{self._glob(table)}', union_by_name=true)").df()
            # the matching files by name (a partition is never deleted, only replaced atomically)
            return con.execute("SELECT * FROM read_parquet(?, union_by_name=true)", [[str(self.root / table / f"{n}.parquet") for n in names]]).df()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run SQL over the views (tables without rows are not defined)."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise KeyError(f"unknown catalog table {table!r}; known: {sorted(TABLES)}")


__all__ = ["TABLES", "Catalog"]
