"""The Parquet-per-partition catalog, with real DuckDB and real processes."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from alqa_core.catalog import Catalog

WRITER = """
import sys
import pandas as pd
from alqa_core.catalog import Catalog
root, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cat = Catalog(root)
for i in range(n):
    cat.write("cases", f"w{worker}_{i}", pd.DataFrame({"case_id": [f"c{worker}_{i}"], "dataset": ["d"], "split": ["train"]}))
    cat.query("SELECT count(*) AS n FROM cases")  # read while others write: never a half-written file
"""


def test_write_read_query_roundtrip(tmp_path):
    cat = Catalog(tmp_path)
    cat.write("cases", "a", pd.DataFrame({"case_id": ["a"], "dataset": ["d1"], "split": ["train"], "n": [1]}))
    cat.write("cases", "b", pd.DataFrame({"case_id": ["b"], "dataset": ["d2"], "split": ["test"]}))
    df = cat.read("cases").sort_values("case_id")
    assert list(df.case_id) == ["a", "b"]
    assert pd.isna(df.n.iloc[1])  # union_by_name fills a missing column
    q = cat.query("SELECT dataset FROM cases WHERE split = ?", ["test"])
    assert list(q.dataset) == ["d2"]


def test_rewriting_a_partition_replaces_only_it(tmp_path):
    cat = Catalog(tmp_path)
    for key in ("a", "b"):
        cat.write("cases", key, pd.DataFrame({"case_id": [key], "dataset": ["d"], "split": ["train"]}))
    cat.write("cases", "a", pd.DataFrame({"case_id": ["a2"], "dataset": ["d"], "split": ["train"]}))
    assert sorted(cat.read("cases").case_id) == ["a2", "b"]


def test_reading_the_partitions_a_pattern_names(tmp_path):
    cat = Catalog(tmp_path)
    for case in ("a", "b"):
        for t in (0, 1):
            cat.write("attention_organ", f"{case}_round_{t:03d}", pd.DataFrame({"case_id": [case], "round": [t], "organ": ["liver"]}))
    round1 = cat.read("attention_organ", "*_round_001")
    assert sorted(round1.case_id) == ["a", "b"] and set(round1["round"]) == {1}
    assert len(cat.read("attention_organ")) == 4
    assert list(cat.read("attention_organ", "*_round_002").columns) == ["case_id", "round", "organ"]  # none match: empty, typed by the table


def test_empty_table_and_bad_names(tmp_path):
    cat = Catalog(tmp_path)
    assert list(cat.read("priority").columns) == ["round", "rank", "case_id"]
    with pytest.raises(KeyError, match="unknown catalog table"):
        cat.read("nope")
    with pytest.raises(ValueError, match="invalid catalog partition"):
        cat.path_of("cases", "../escape")
    with pytest.raises(ValueError, match="needs columns"):
        cat.write("cases", "x", pd.DataFrame({"case_id": ["x"]}))


def test_concurrent_writers_lose_no_rows_and_see_no_lock_errors(tmp_path):
    n_workers, n_rows = 4, 15
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(n_rows)], stderr=subprocess.PIPE, text=True)
        for w in range(n_workers)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    cat = Catalog(tmp_path)
    assert int(cat.query("SELECT count(*) AS n FROM cases").n.iloc[0]) == n_workers * n_rows
    assert not [p for p in (tmp_path / "cases").iterdir() if p.name.startswith(".tmp")]
