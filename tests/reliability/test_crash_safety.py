"""kill -9 in the middle of writes: nothing half-written is visible, and running again gives the same bytes.

Three real processes are killed with SIGKILL (no cleanup handlers run):

- a process writing NIfTI volumes and Parquet catalog rows through the core
  writers, killed while a temporary file is open, several times;
- the submissions intake, killed while it works through an inbox;
- a real ``dagster asset materialize`` of ``raw_scans`` (the real DICOM
  series), killed the moment its output's temporary file appears.

Temporary files are named ``.tmp-*`` (hidden) by ``alqa_core.io.atomic`` and
left behind by a kill; every reader (catalog globs, the dataset and inbox
scans, export) skips hidden names, which the checks below exercise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.catalog import Catalog
from alqa_core.io.nifti import read_ct, write_ct
from alqa_core.volume import CTVolume
from alqa_core.workspace import WorkspaceLayout

from .conftest import AFFINE, DAGSTER_CLI, REPO, dagster_env, make_config, phantom_ct, phantom_label, tree_hashes

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _spawn(args: list[str], env=None, cwd=REPO) -> subprocess.Popen:
    """A child in its own process group, so the kill reaches every process it started."""
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float, extra_delay_s: float = 0.0) -> bool:
    """SIGKILL the process group as soon as ``ready()``; True if it was killed before it finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            if extra_delay_s:
                time.sleep(extra_delay_s)
            if proc.poll() is not None:
                return False
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the child never reached the point to kill it within {timeout_s} s")
    return False


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".tmp-*")] if folder.exists() else []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# 1. the core writers, killed mid-write, repeatedly
# --------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import pandas as pd
    from alqa_core.catalog import Catalog
    from alqa_core.io.nifti import write_ct
    from alqa_core.volume import CTVolume

    root, n = Path(sys.argv[1]), int(sys.argv[2])
    cat = Catalog(root / "catalog")
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(n):
        hu = np.random.default_rng(i).normal(0, 300, (160, 160, 48)).astype(np.float32)  # ~0.3 s of gzip
        write_ct(root / "raw_scans" / f"case{i:03d}.nii.gz", CTVolume(hu, affine))
        rows = pd.DataFrame({"case_id": [f"case{i:03d}"] * 20000, "slice": np.arange(20000), "value": np.random.default_rng(i).random(20000)})
        cat.write("geometry", f"case{i:03d}", rows)
    """
)


def _expected_writer_outputs(root: Path, n: int) -> dict[str, str]:
    """The same writes in this process, uninterrupted: relative path -> sha256."""
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(n)], cwd=REPO, check=True, timeout=300)
    return tree_hashes(root)


def _check_nothing_partial_visible(root: Path, expected: dict[str, str]) -> None:
    visible = {k: v for k, v in tree_hashes(root).items() if not Path(k).name.startswith(".")}
    for rel, digest in visible.items():
        assert rel in expected, f"unexpected visible file {rel}"
        assert digest == expected[rel], f"{rel}: visible but not complete"
    cat = Catalog(root / "catalog")
    frame = cat.read("geometry")  # the DuckDB glob must skip hidden temporaries
    written = {f"catalog/geometry/{p}.parquet" for p in cat.partitions("geometry")}
    assert written == {k for k in visible if k.startswith("catalog/")}
    assert len(frame) == 20000 * len(written)
    for rel in visible:
        if rel.endswith(".nii.gz"):
            read_ct(root / rel)


@pytest.mark.slow
def test_core_writers_killed_mid_write_leave_nothing_partial_and_rerun_identically(tmp_path, figures):
    n = 4
    expected = _expected_writer_outputs(tmp_path / "reference", n)
    root = tmp_path / "ws"
    rng = random.Random(7)
    stale = 0
    for attempt in range(5):
        before = set(map(str, _temps(root)))
        proc = _spawn([sys.executable, "-c", WRITER, str(root), str(n)])
        figures.add("crashes_injected")
        # kill while a NEW temporary file exists (a write in progress), after a random extra delay
        killed = _kill_when(proc, lambda: bool(set(map(str, _temps(root))) - before), 120, rng.uniform(0, 0.05))
        assert killed, "the writer finished before it could be killed"
        _check_nothing_partial_visible(root, expected)
        stale = len(_temps(root))
        figures.add("crashes_recovered")
    assert stale >= 1  # kills do leave temporaries behind: the checks above ran with them present
    # recovery: run again to completion
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(n)], cwd=REPO, check=True, timeout=300)
    visible = {k: v for k, v in tree_hashes(root).items() if not Path(k).name.startswith(".")}
    assert visible == expected  # byte-identical to an uninterrupted run
    figures.add("rows_written", 20000 * n)
    figures.add("rows_lost", 20000 * n - len(Catalog(root / "catalog").read("geometry")))


# --------------------------------------------------------------------------
# 2. the submissions intake, killed while it works through an inbox
# --------------------------------------------------------------------------

INTAKE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from alqa_core.catalog import Catalog
    from alqa_core.config.campaign import SubmissionConfig
    from alqa_core.annotation.intake.process import process_inbox
    from alqa_core.organs import DEFAULT_ORGAN_TABLE
    from alqa_core.workspace import WorkspaceLayout

    layout = WorkspaceLayout(Path(sys.argv[1]))
    while process_inbox(layout, Catalog(layout.catalog), {"c1", "c2"}, DEFAULT_ORGAN_TABLE,
                        SubmissionConfig(max_per_tick=3), -1, settle_seconds=0).remaining:
        pass
    """
)


@pytest.mark.slow
def test_intake_killed_mid_batch_records_every_submission_exactly_once(tmp_path, figures):
    layout = WorkspaceLayout(tmp_path / "ws")
    write_ct(layout.raw_scan("c1"), CTVolume(phantom_ct(0), AFFINE))
    from alqa_core.io.nifti import write_nifti

    sent = {}
    for i in range(24):
        lab = phantom_label()
        lab[0, 0, : i % 8] = 1  # 8 distinct contents: every later copy of one is a duplicate
        src = write_nifti(tmp_path / "src" / f"{i}.nii.gz", lab, AFFINE if i % 6 else np.diag([3.0, 3.0, 4.5, 1.0]))
        e = write_submission(layout.inbox, "c1", f"dr_{i}", src)
        sent[e.name] = (_sha(src), i % 6 != 0)  # every 6th is on the wrong grid: rejected
        time.sleep(0.002)
    figures.add("submissions_sent", len(sent))
    rng = random.Random(3)
    kills = 0
    for _ in range(4):
        proc = _spawn([sys.executable, "-c", INTAKE, str(layout.root)])
        rows_before = len(Catalog(layout.catalog).partitions("submissions"))
        # kill just after a batch was committed to the catalog, while its files are being moved
        if not _kill_when(proc, lambda: len(Catalog(layout.catalog).partitions("submissions")) > rows_before, 120, rng.uniform(0, 0.03)):
            break
        kills += 1
    figures.add("crashes_injected", kills)
    assert kills >= 2
    subprocess.run([sys.executable, "-c", INTAKE, str(layout.root)], cwd=REPO, check=True, timeout=300)
    subs = Catalog(layout.catalog).read("submissions")
    assert sorted(subs.entry) == sorted(sent), "an entry was lost or recorded twice"
    assert not [p for p in layout.inbox.iterdir() if not p.name.startswith(".")]
    by_entry = subs.set_index("entry")
    first_of = {}
    for name in sorted(sent, key=lambda n: by_entry.loc[n, "entry_mtime_ns"]):
        sha, good = sent[name]
        status = by_entry.loc[name, "status"]
        if not good:
            assert status == "rejected" and (layout.quarantine / name / f"{name}.nii.gz").exists()
        else:
            assert status == ("duplicate" if sha in first_of else "accepted"), (name, status)
            first_of.setdefault(sha, name)
            assert _sha(layout.submissions_store / f"{sha}.nii.gz") == sha
    assert sorted(subs[subs.status == "accepted"].sha256) == sorted(first_of)
    figures.add("submissions_processed_once", len(sent))
    figures.add("crashes_recovered", kills)


# --------------------------------------------------------------------------
# 3. a real Dagster materialization, killed while it writes its output
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_materialization_killed_mid_write_then_rerun_is_identical(tmp_path, real_ct_dir, figures):
    root = tmp_path / "Dataset003_Real"
    (root / "imagesTr").mkdir(parents=True)
    meta = {"labels": {"background": 0, "liver": 5}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    shutil.copytree(real_ct_dir / "series", root / "imagesTr" / "realct")
    cfg = make_config(tmp_path, [root])
    env = dagster_env(tmp_path, cfg)
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions("cases", ["realct"])
    cli = [DAGSTER_CLI, "asset", "materialize", "-m", "alqa_dagster.definitions", "--select", "raw_scans", "--partition", "realct"]
    cli += ["--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})]
    ws = tmp_path / "ws"
    out = ws / "raw_scans" / "realct.nii.gz"

    proc = _spawn(cli, env=env)
    figures.add("crashes_injected")
    killed = _kill_when(proc, lambda: bool(_temps(ws / "raw_scans")), 300)
    log = proc.stdout.read().decode(errors="replace")
    assert killed, "the materialization finished before its write could be interrupted:\n" + log[-3000:]
    assert not out.exists(), "a half-written raw scan is visible"
    assert _temps(ws / "raw_scans"), "the kill should have left the temporary behind"
    assert Catalog(ws / "catalog").read("geometry").empty or len(Catalog(ws / "catalog").read("geometry")) == 1

    done = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first = _sha(out)
    cat = Catalog(ws / "catalog")
    rows = cat.read("geometry")
    assert len(rows) == 1 and len(cat.read("cases")) == 1
    # once more: byte-identical volume and catalog rows (idempotent), and equal to the core call in this process
    again = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert _sha(out) == first
    pd.testing.assert_frame_equal(cat.read("geometry"), rows)
    from alqa_core.config.campaign import load_campaign
    from alqa_core.ingest.cases import index_campaign, ingest_scan

    ref = ingest_scan(index_campaign(load_campaign(cfg)).cases["realct"], tmp_path / "ref" / "realct.nii.gz")
    assert _sha(ref.path) == first
    assert [p.name for p in (ws / "raw_scans").iterdir() if not p.name.startswith(".")] == ["realct.nii.gz"]
    figures.add("crashes_recovered")
    figures.add("rows_written", 2)
    figures.add("rows_lost", 2 - len(rows) - len(cat.read("cases")))
