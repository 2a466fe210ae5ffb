"""Concurrent writers of the Parquet catalog, and two annotators answering the same case.

- 4 real ``dagster asset materialize`` processes, one partition each, at the
  same time on one sqlite instance and one workspace: no lock errors, no lost
  rows (each writes its case's ``cases`` and ``geometry`` rows).
- 4 processes hammering the catalog writer while this process reads it.
- Two annotators submit the same case: both files are kept, and reassembly
  uses the documented rule (latest accepted by ``submitted_at``, ties by
  submission id), recorded in the provenance, whatever the arrival order.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.intake.process import process_inbox
from alqa_core.annotation.labelled.reassembly import REVISION_RULE, reassemble
from alqa_core.annotation.labelled.revisions import revisions_of
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import SubmissionConfig
from alqa_core.io.nifti import write_ct, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap
from alqa_core.workspace import WorkspaceLayout

from .conftest import AFFINE, DAGSTER_CLI, REPO, dagster_env, make_config, make_dataset, phantom_ct, phantom_label

LOCK_WORDS = ("database is locked", "could not set lock", "lock on file", "IO Error: Could not set lock", "Conflicting lock")


@pytest.mark.slow
def test_four_parallel_materializations_write_the_catalog_without_lock_errors_or_lost_rows(tmp_path, figures):
    cases = ("c1", "c2", "c3", "c4")
    root = make_dataset(tmp_path / "Dataset001_Four", cases=cases, labelled=cases)
    cfg = make_config(tmp_path, [root])
    env = dagster_env(tmp_path, cfg)
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions("cases", list(cases))
    select = "raw_scans,original_labels,preprocessed_volumes"
    procs = [
        subprocess.Popen(
            [DAGSTER_CLI, "asset", "materialize", "-m", "alqa_dagster.definitions", "--select", select, "--partition", c,
             "--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for c in cases
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    figures.add("rows_written", 2 * len(cases))
    for c, p, out in zip(cases, procs, outputs):
        assert p.returncode == 0, f"{c}:\n{out[-4000:]}"
        assert "RUN_SUCCESS" in out, out[-2000:]
        hits = [w for w in LOCK_WORDS if w.lower() in out.lower()]
        assert not hits, f"{c}: lock errors {hits}"
    cat = Catalog(tmp_path / "ws" / "catalog")
    got = {t: sorted(cat.read(t).case_id) for t in ("cases", "geometry")}
    assert got == {"cases": list(cases), "geometry": list(cases)}
    with cat.connect() as con:  # and through the DuckDB views
        assert con.execute("SELECT count(DISTINCT case_id) FROM geometry").fetchone()[0] == 4
    for c in cases:
        assert (tmp_path / "ws" / "preprocessed_volumes" / f"{c}.nii.gz").exists()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    figures.add("rows_lost", 2 * len(cases) - sum(len(v) for v in got.values()))


WRITER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from alqa_core.catalog import Catalog

    cat, who, n = Catalog(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        cat.write("metrics", f"{who}_{i:04d}", pd.DataFrame({"case_id": [f"{who}_{i}"] * 3, "organ": ["liver", "spleen", "aorta"], "dice": [0.9, 0.8, 0.7]}))
    """
)


@pytest.mark.slow
def test_four_processes_writing_catalog_rows_while_it_is_read(tmp_path, figures):
    root, n = tmp_path / "catalog", 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), f"w{k}", str(n)], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    cat, reads = Catalog(root), 0
    while any(p.poll() is None for p in procs):
        frame = cat.read("metrics")  # a reader during the writes: never an error, never a partial row set
        assert len(frame) % 3 == 0
        reads += 1
    errors = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert reads > 0
    frame = cat.read("metrics")
    figures.add("rows_written", 4 * n * 3)
    figures.add("rows_lost", 4 * n * 3 - len(frame))
    assert len(frame) == 4 * n * 3 and frame.case_id.nunique() == 4 * n


# --------------------------------------------------------------------------
# two annotators, one case
# --------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    layout = WorkspaceLayout(tmp_path / "ws")
    write_ct(layout.raw_scan("c1"), CTVolume(phantom_ct(0), AFFINE))
    return layout


def _revision(tmp_path, name: str, liver_slices: slice) -> tuple:
    lab = phantom_label()
    lab[lab == T.value_of("liver")] = 0
    lab[6:12, 6:12, liver_slices] = T.value_of("liver")
    return write_label(tmp_path / "annotators" / f"{name}.nii.gz", LabelMap(lab, AFFINE)), lab


@pytest.mark.parametrize("arrival", ["earlier_first", "later_first"])
def test_two_annotators_on_one_case_both_kept_latest_accepted_wins_in_provenance(tmp_path, workspace, figures, arrival):
    layout = workspace
    path_a, lab_a = _revision(tmp_path, "dr_a", slice(2, 5))
    path_b, lab_b = _revision(tmp_path, "dr_b", slice(2, 9))
    sends = [("dr_a", path_a, "2026-11-23T10:00:00+00:00"), ("dr_b", path_b, "2026-11-23T10:05:00+00:00")]
    if arrival == "later_first":  # dr_b's file reaches the inbox first; submitted_at still decides
        sends.reverse()
    cat = Catalog(layout.catalog)
    for annotator, path, when in sends:
        write_submission(layout.inbox, "c1", annotator, path, submitted_at=when)
        time.sleep(0.01)
        figures.add("submissions_sent")
        result = process_inbox(layout, cat, {"c1"}, T, SubmissionConfig(), -1, settle_seconds=0)
        assert len(result.accepted) == 1, result.rejected
    subs = cat.read("submissions")
    assert sorted(subs.annotator) == ["dr_a", "dr_b"] and set(subs.status) == {"accepted"}
    # both versions kept, byte for byte, in the content-addressed store
    for r in subs.itertuples():
        assert open(r.stored_path, "rb").read() == (path_a if r.annotator == "dr_a" else path_b).read_bytes()
    sub_b = subs.set_index("annotator").loc["dr_b", "submission_id"]
    sub_a = subs.set_index("annotator").loc["dr_a", "submission_id"]

    revisions = revisions_of("c1", subs, layout, T)
    pseudo = LabelMap(np.zeros_like(lab_a), AFFINE)
    results = [reassemble("c1", T, pseudo, None, (), list(order)) for order in itertools.permutations(revisions)]
    for result in results:  # deterministic: the same label and provenance whatever the order given
        np.testing.assert_array_equal(result.label.array, lab_b)
        assert result.to_records() == results[0].to_records()
    liver = next(p for p in results[0].to_records() if p["organ"] == "liver")
    assert liver["source"] == "revised" and liver["annotator"] == "dr_b" and liver["submission_id"] == sub_b
    assert liver["revision_rule"] == REVISION_RULE == "latest_accepted_wins"
    assert liver["superseded"] == sub_a
    figures.add("submissions_processed_once", 2)
