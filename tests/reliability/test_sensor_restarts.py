"""The submissions sensor across a daemon restart, with duplicates, on a real sqlite DagsterInstance.

"Daemon down" is simulated the way it happens: a tick runs and its cursor is
persisted; the instance is closed; files arrive; a new instance object opens
the same storage and ticks again with the persisted cursor. The daemon's part
after a tick (create one run per RunRequest, tagged with its run_key) is done
with ``instance.create_run_for_job``, as the daemon does before launching.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.catalog import Catalog
from alqa_core.io.nifti import write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import LabelMap
from alqa_dagster.defs.automation import submission_run_key, submissions_sensor

from .conftest import AFFINE, OTHER_AFFINE, phantom_label, sensor_resources

RUN_KEY = "dagster/run_key"


def tick(home: Path, resources: dict, cursor: str | None):
    """One sensor evaluation on a freshly opened instance (each tick is its own 'daemon process')."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
            result = submissions_sensor(ctx)
    return result


@functools.cache
def _revision_job():
    from alqa_dagster.definitions import defs

    return defs().resolve_job_def("revision_job")


def launch(home: Path, requests, record_only: bool = False) -> None:
    """The daemon's side of a tick: one run per request, tagged with its run_key (skipped if the key ran).

    ``record_only`` stores the run record alone (``instance.add_run``), without the job and plan
    snapshots ``create_run_for_job`` builds (about a second per run here): for the load test.
    """
    if not requests:
        return
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for r in requests:
            if instance.get_run_ids(dg.RunsFilter(tags={RUN_KEY: r.run_key}), limit=1):
                continue  # the daemon's run_key idempotence check
            tags = {RUN_KEY: r.run_key, "dagster/partition": r.partition_key}
            if record_only:
                instance.add_run(dg.DagsterRun(job_name="revision_job", run_id=str(uuid.uuid4()), tags=tags))
            else:
                instance.create_run_for_job(_revision_job(), tags=tags)


def runs_per_key(home: Path) -> dict[str, int]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        counts: dict[str, int] = {}
        for run in instance.get_runs():
            key = run.tags.get(RUN_KEY)
            if key:
                counts[key] = counts.get(key, 0) + 1
    return counts


def _label_file(path: Path, affine=AFFINE, extra: int = 0) -> Path:
    lab = phantom_label()
    lab[0, 0, : extra] = 1  # a distinct revision per `extra`
    return write_label(path, LabelMap(lab, affine))


def test_a_submission_arriving_while_the_daemon_is_down_runs_exactly_once(tmp_path, campaign, figures):
    cfg, home, resources = campaign
    inbox = tmp_path / "ws" / "inbox"
    first = tick(home, resources, None)
    assert first.run_requests == []
    cursor = first.cursor  # persisted by the daemon with the tick

    # --- daemon down: two new submissions and a byte-identical duplicate of one of them arrive
    rev = _label_file(tmp_path / "rev_c1.nii.gz")
    a = write_submission(inbox, "c1", "dr_a", rev)
    b = write_submission(inbox, "c2", "dr_b", None, kind="confirmed")
    dup = write_submission(inbox, "c1", "dr_c", rev)  # the same file sent again (same content hash)
    figures.add("submissions_sent", 3)

    # --- restart: a new instance on the same storage, the persisted cursor
    second = tick(home, resources, cursor)
    keys = [r.run_key for r in second.run_requests]
    assert len(keys) == len(set(keys)) == 2, keys
    assert sorted(r.partition_key for r in second.run_requests) == ["c1", "c2"]
    subs = Catalog(tmp_path / "ws" / "catalog").read("submissions").set_index("entry")
    assert subs.loc[a.name, "status"] == "accepted" and subs.loc[b.name, "status"] == "accepted"
    assert subs.loc[dup.name, "status"] == "duplicate"
    assert subs.loc[dup.name, "sha256"] == subs.loc[a.name, "sha256"]
    assert submission_run_key("c1", subs.loc[a.name, "sha256"]) in keys

    # the daemon launches the runs; later ticks (with the new cursor, or a stale one after a crash) ask for nothing
    launch(home, second.run_requests)
    assert tick(home, resources, second.cursor).run_requests == []
    assert tick(home, resources, cursor).run_requests == []
    assert tick(home, resources, None).run_requests == []
    counts = runs_per_key(home)
    assert counts == {k: 1 for k in keys}, counts
    # both files of the duplicate are kept (content-addressed store), nothing left in the inbox
    store = tmp_path / "ws" / "submissions"
    sha = subs.loc[a.name, "sha256"]
    assert (store / f"{sha}.nii.gz").read_bytes() == rev.read_bytes()
    assert len(list(store.glob(f"{sha}.*.dup.nii.gz"))) == 1
    assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
    figures.add("submissions_processed_once", 3)


def test_a_tick_that_dies_before_the_daemon_launches_is_repeated_without_a_second_run(tmp_path, campaign, figures):
    """The daemon dies after the sensor stored a submission but before it created the run."""
    cfg, home, resources = campaign
    inbox = tmp_path / "ws" / "inbox"
    write_submission(inbox, "c2", "dr_a", _label_file(tmp_path / "rev_c2.nii.gz", OTHER_AFFINE))
    figures.add("submissions_sent")
    lost = tick(home, resources, None)  # its result (requests and cursor) is lost with the daemon
    assert len(lost.run_requests) == 1
    again = tick(home, resources, None)  # restarted daemon, old cursor: the same request, same key
    assert [r.run_key for r in again.run_requests] == [lost.run_requests[0].run_key]
    launch(home, again.run_requests)
    launch(home, lost.run_requests)  # a late duplicate request: the run_key stops it
    assert tick(home, resources, again.cursor).run_requests == []
    assert runs_per_key(home) == {lost.run_requests[0].run_key: 1}
    figures.add("submissions_processed_once")


def test_a_submission_whose_file_time_is_older_than_the_cursor_is_not_skipped(tmp_path, campaign, figures):
    """A slow rename, ``cp -p``/``rsync -a`` or a skewed NFS clock gives a file an old time after the cursor moved on."""
    cfg, home, resources = campaign
    inbox = tmp_path / "ws" / "inbox"
    write_submission(inbox, "c2", "dr_b", None, kind="confirmed")
    first = tick(home, resources, None)
    assert len(first.run_requests) == 1
    launch(home, first.run_requests)
    late = write_submission(inbox, "c1", "dr_a", _label_file(tmp_path / "rev_c1.nii.gz"))
    old = time.time() - 3600
    for p in (late.label_path, late.meta_path):
        os.utime(p, (old, old))
    figures.add("submissions_sent", 2)
    second = tick(home, resources, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["c1"]
    launch(home, second.run_requests)
    assert tick(home, resources, second.cursor).run_requests == []
    assert sorted(runs_per_key(home).values()) == [1, 1]
    figures.add("submissions_processed_once", 2)


def test_many_submissions_are_worked_through_in_bounded_batches(tmp_path, campaign, figures):
    """``submissions.max_per_tick`` bounds a tick; the cursor moves every tick; all runs once."""
    from .conftest import set_yaml_key

    cfg, home, resources = campaign
    set_yaml_key(cfg, "submissions", "max_per_tick", 4)
    resources = sensor_resources(cfg)
    inbox = tmp_path / "ws" / "inbox"
    n = 11
    for i in range(n):
        write_submission(inbox, "c1" if i % 2 else "c2", f"dr_{i}", None, kind="confirmed", note=f"#{i}")
    figures.add("submissions_sent", n)
    cursor, cursors, seen = None, [], []
    for _ in range(10):
        result = tick(home, resources, cursor)
        assert len(result.run_requests) <= 4
        seen += [r.run_key for r in result.run_requests]
        launch(home, result.run_requests)
        if result.cursor != cursor:
            cursors.append(result.cursor)
        cursor = result.cursor
        if not result.run_requests:
            break
    assert len(seen) == len(set(seen)) == n, seen
    assert len(cursors) >= 3  # ceil(11 / 4) ticks, each moving the cursor
    assert sorted(runs_per_key(home).values()) == [1] * n
    figures.add("submissions_processed_once", n)


def test_a_submission_for_a_case_still_being_ingested_waits_and_blocks_nothing(tmp_path, campaign, figures):
    """The case is a registered partition but its raw scan is not written yet (its ingest run is pending)."""
    from alqa_core.io.nifti import write_ct
    from alqa_core.volume import CTVolume

    from .conftest import phantom_ct

    cfg, home, resources = campaign
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("cases", ["c3"])
    inbox = tmp_path / "ws" / "inbox"
    early = write_submission(inbox, "c3", "dr_a", _label_file(tmp_path / "rev_c3.nii.gz", extra=3))
    time.sleep(0.01)
    write_submission(inbox, "c1", "dr_a", _label_file(tmp_path / "rev_c1.nii.gz"))
    figures.add("submissions_sent", 2)
    first = tick(home, resources, None)
    assert [r.partition_key for r in first.run_requests] == ["c1"]  # the later one is not held up
    assert early.meta_path.exists() and early.label_path.exists()  # waiting, neither rejected nor lost
    launch(home, first.run_requests)
    write_ct(tmp_path / "ws" / "raw_scans" / "c3.nii.gz", CTVolume(phantom_ct(3), AFFINE))  # the ingest run finishes
    second = tick(home, resources, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["c3"]
    launch(home, second.run_requests)
    assert tick(home, resources, second.cursor).run_requests == []
    assert sorted(runs_per_key(home).values()) == [1, 1]
    figures.add("submissions_processed_once", 2)


def test_the_same_bytes_for_two_different_cases_are_two_submissions(tmp_path, campaign, figures):
    """An all-background label (every organ emptied) is byte-identical on two scans with one grid."""
    from alqa_core.io.nifti import write_ct
    from alqa_core.volume import CTVolume

    from .conftest import phantom_ct

    cfg, home, resources = campaign
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("cases", ["c3"])
    write_ct(tmp_path / "ws" / "raw_scans" / "c3.nii.gz", CTVolume(phantom_ct(3), AFFINE))  # c1's grid
    empty = write_label(tmp_path / "empty.nii.gz", LabelMap(np.zeros_like(phantom_label()), AFFINE))
    inbox = tmp_path / "ws" / "inbox"
    for case in ("c1", "c3", "c1"):  # the third is a true duplicate
        write_submission(inbox, case, "dr_a", empty, emptied_organs=T.names)  # every organ deliberately emptied
        time.sleep(0.01)
    figures.add("submissions_sent", 3)
    result = tick(home, resources, None)
    assert sorted(r.partition_key for r in result.run_requests) == ["c1", "c3"]
    subs = Catalog(tmp_path / "ws" / "catalog").read("submissions")
    assert sorted(zip(subs.case_id, subs.status)) == [("c1", "accepted"), ("c1", "duplicate"), ("c3", "accepted")]
    launch(home, result.run_requests)
    assert tick(home, resources, result.cursor).run_requests == []
    assert sorted(runs_per_key(home).values()) == [1, 1]
    figures.add("submissions_processed_once", 3)
