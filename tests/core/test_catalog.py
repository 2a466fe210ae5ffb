"""The Parquet-per-partition catalog, with real DuckDB and real processes."""

from __future__ import annotations

import multiprocessing as mp

import pandas as pd
import pytest

from alqa_core.catalog import Catalog


def _writer(args):
    root, worker, n_rows = args
    cat = Catalog(root)
    for i in range(n_rows):
        cat.write("cases", f"w{worker}_{i}", pd.DataFrame({"case_id": [f"c{worker}_{i}"], "dataset": ["d"], "split": ["train"]}))
        # read while others write: must never see a half-written file
        cat.query("SELECT count(*) AS n FROM cases")
    return n_rows


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
    ctx = mp.get_context("spawn")
    with ctx.Pool(n_workers) as pool:
        done = pool.map(_writer, [(str(tmp_path), w, n_rows) for w in range(n_workers)])
    assert sum(done) == n_workers * n_rows
    cat = Catalog(tmp_path)
    assert int(cat.query("SELECT count(*) AS n FROM cases").n.iloc[0]) == n_workers * n_rows
    assert not [p for p in (tmp_path / "cases").iterdir() if p.name.startswith(".tmp")]
