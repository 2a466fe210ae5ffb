"""The production profile for real: PostgreSQL instance storage, Celery workers, the daemon.

One tiny phantom campaign (5 cases at 6 mm, a tiny UNet, 2 x 2 iterations) is
ingested into the PostgreSQL instance, then round 0 (training set, model,
predictions, attention, priority, queue, evaluation) runs through the Celery
executor on two worker processes: `gpu@` subscribed to the `gpu` queue only, and
`cpu@` to the default queue. The three tests then check

a. where each step ran (the workers' names in the run's events, in PostgreSQL);
b. that the submissions sensor's cursor and run keys survive a kill -9 of
   dagster-daemon: a submission that arrives while it is down (plus a
   byte-identical duplicate) is processed exactly once after the restart;
c. that the embedded profile (in-process, sqlite) ranks the same cases with the
   same scores from the same ingested inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.config.template import write_template
from alqa_core.ingest.cases import index_campaign
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign

from .conftest import CELERY_YAML, PRODUCTION_YAML, REPO, VENV_BIN, WORKSPACE_YAML, Background, process_env, run_cli, stop_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger("alqa.integration")  # phase timings: pytest -o log_cli=true --log-cli-level=INFO

ROUND_JOB = "round_job"
GPU_WORKER, CPU_WORKER = "gpu", "cpu"
DEFAULT_QUEUE = "dagster"  # dagster-celery's task_default_queue


def write_campaign_config(path: Path, campaign: Path, workspace: Path) -> Path:
    datasets = tuple(str(p) for p in sorted((campaign / "datasets").iterdir()))
    cfg = write_template(
        path, name="it", workspace_root=str(workspace), datasets=datasets, architectures=(("unet", "tiny"),),
        spacing_mm=6.0, patch_vox=32, roi_vox=32, max_epochs=2, iterations_per_epoch=2, qa_epochs=3,
    )
    # training on one thread: the embedded comparison (test c) needs bit-identical weights
    cfg.write_text(cfg.read_text().replace("training:\n", "training:\n  num_threads: 1\n", 1))
    return cfg


@dataclass(frozen=True)
class Production:
    root: Path
    home: Path
    config: Path
    workspace: Path
    ingested: Path  # a copy of the workspace right after ingest, before the round
    env: dict
    keys: tuple[str, ...]
    round_run_id: str
    workers: tuple[Background, ...]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


def _ingest(instance: dg.DagsterInstance, keys) -> None:
    from alqa_dagster.runner import materialize, register_cases

    register_cases(instance, keys)
    materialize(instance, ["raw_scans", "original_labels", "preprocessed_volumes"], (keys[0], keys[-1]))


def _worker(name: str, queue: str, env: dict, root: Path, *celery_args: str) -> Background:
    # -i: import alqa's assets (torch, MONAI) when the worker starts, not on its first step
    args = [
        str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(CELERY_YAML),
        "-n", name, "-q", queue, "-i", "alqa_dagster.defs.ensemble", "--", *celery_args,
    ]
    return Background(args, env, root / f"worker_{name}.log")


def _queues_by_worker(broker: str) -> dict[str, list[str]]:
    from celery import Celery

    app = Celery(broker=broker)
    try:
        answer = app.control.inspect(timeout=2.0).active_queues() or {}
    finally:
        app.close()
    return {host.split("@")[0]: sorted(q["name"] for q in queues) for host, queues in answer.items()}


@pytest.fixture(scope="module")
def production(services, tmp_path_factory):
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("production")
    write_campaign(root / "campaign", CampaignSpec(n_cases=5, seed=7, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.2, test_fraction=0.0))
    workspace = root / "ws"
    config = write_campaign_config(root / "campaign.yaml", root / "campaign", workspace)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PRODUCTION_YAML, home / "dagster.yaml")  # the shipped file, unchanged
    env = process_env(services, home, config, ALQA_EXECUTOR="celery")
    keys = tuple(sorted(index_campaign(load_campaign(config)).cases))

    # the GPU worker takes one step at a time in its own process (--pool solo: no fork after CUDA init)
    workers = (
        _worker(GPU_WORKER, "gpu", env, root, "--pool", "solo"),
        _worker(CPU_WORKER, DEFAULT_QUEUE, env, root, "--concurrency", "1"),
    )
    # test b's sensor, switched on as an operator does it; it does nothing until a daemon runs
    # (started here so that it loads the code location while ingest runs)
    sensor_on = Background([str(VENV_BIN / "dagster"), "sensor", "start", "submissions_sensor", "-w", str(WORKSPACE_YAML)], env, root / "sensor_start.log")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in services.items():
                mp.setenv(k, v)
            mp.setenv("ALQA_CAMPAIGN", str(config))
            mp.delenv("ALQA_EXECUTOR", raising=False)
            # ingest in this process, straight into the PostgreSQL instance (ingest is not what is under test)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                _ingest(instance, keys)
            log.info("%.1f s: ingested %d cases into PostgreSQL", time.monotonic() - t0, len(keys))
            shutil.copytree(workspace, root / "ingested")
            assert sensor_on.proc.wait(timeout=300) == 0, sensor_on.tail()
            log.info("%.1f s: submissions_sensor started", time.monotonic() - t0)
            wait_until(
                lambda: _queues_by_worker(services["ALQA_CELERY_BROKER"]).keys() >= {GPU_WORKER, CPU_WORKER},
                240, "both Celery workers answer", *workers,
            )
            log.info("%.1f s: workers ready", time.monotonic() - t0)
            # the round as an operator launches it: the job's CLI, executor from ALQA_EXECUTOR
            tags = json.dumps({"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
            run_cli([str(VENV_BIN / "dagster"), "job", "execute", "-m", "alqa_dagster.definitions", "-j", ROUND_JOB, "--tags", tags], env)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                [run] = instance.get_runs(dg.RunsFilter(job_name=ROUND_JOB), limit=1)
                assert run.status == dg.DagsterRunStatus.SUCCESS
            log.info("%.1f s: round 0 done through Celery", time.monotonic() - t0)
            yield Production(root, home, config, workspace, root / "ingested", env, keys, run.run_id, workers)
    finally:
        stop_all((*workers, sensor_on))


def test_round_runs_gpu_steps_on_the_gpu_worker_and_the_rest_on_the_default_one(production, services, record_property):
    # the workers listen where the deployment says: gpu@ on `gpu` only, cpu@ on the default queue
    assert _queues_by_worker(services["ALQA_CELERY_BROKER"]) == {GPU_WORKER: ["gpu"], CPU_WORKER: [DEFAULT_QUEUE]}

    from alqa_dagster.definitions import defs

    job = defs().resolve_job_def(ROUND_JOB)
    gpu_tagged = {name for name, node in job.graph.node_dict.items() if node.tags.get("dagster-celery/queue") == "gpu"}
    assert gpu_tagged == {"model_checkpoints", "soft_predictions"}  # training and inference

    # the run's events, as PostgreSQL holds them: the orchestrator's "Submitting celery task for
    # step X to queue Q", the worker's "Executing steps X in celery worker" (with its name), the step
    queue_of, worker_of, pid_of, orchestrator_pids = {}, {}, {}, set()
    with production.instance() as instance:
        for record in instance.all_logs(production.round_run_id):
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            message = record.user_message or ""
            if event.event_type_value == "ENGINE_EVENT" and message.startswith("Submitting celery task"):
                queue_of[event.step_key] = message.rsplit('to queue "', 1)[1].split('"')[0]
                orchestrator_pids.add(event.pid)
            metadata = getattr(event.event_specific_data, "metadata", None) or {}
            if event.event_type_value == "ENGINE_EVENT" and "Celery worker" in metadata:
                worker_of[event.step_key] = metadata["Celery worker"].value
            if event.event_type_value == "STEP_SUCCESS":
                pid_of[event.step_key] = event.pid

    steps = set(pid_of)
    assert gpu_tagged < steps and {"training_set", "attention_maps", "priority_list", "annotation_queue"} <= steps
    assert set(queue_of) == steps == set(worker_of), "every step went through Celery"
    for step in steps:
        expected = ("gpu", GPU_WORKER) if step in gpu_tagged else (DEFAULT_QUEUE, CPU_WORKER)
        assert (queue_of[step], worker_of[step].split("@")[0]) == expected, step
    # and in the workers' own processes: one pid per worker, neither the orchestrator's
    gpu_pids = {pid_of[s] for s in steps if s in gpu_tagged}
    cpu_pids = {pid_of[s] for s in steps if s not in gpu_tagged}
    assert len(gpu_pids) == 1 and len(cpu_pids) == 1 and gpu_pids != cpu_pids
    assert len(orchestrator_pids) == 1 and not orchestrator_pids & (gpu_pids | cpu_pids)

    # what the workers wrote landed in the shared workspace: every case ranked
    cat = Catalog(production.workspace / "catalog")
    priority = cat.read("priority").query("round == 0")
    attention = cat.read("attention_case").query("round == 0")
    expected_rows = 2 * len(production.keys)
    record_property("rows_written", len(priority) + len(attention))
    record_property("rows_lost", expected_rows - len(set(priority.case_id)) - len(set(attention.case_id)))
    assert set(priority.case_id) == set(attention.case_id) == set(production.keys)


def test_embedded_profile_ranks_the_same_cases_with_the_same_scores(production, tmp_path, monkeypatch):
    """The same ingested inputs through the embedded profile: the in-process executor and a sqlite instance.

    Determinism: both profiles train with the same seeds (TrainConfig.seed, the sampler's
    seed) on one thread (training.num_threads: 1 in the campaign) and infer on one
    thread (OMP_NUM_THREADS=1 for the workers, torch.set_num_threads(1) here), so the
    weights, predictions and scores are bit-identical, not merely close. Ingest is
    copied, not redone: the round is what the two profiles must agree on.
    """
    import torch

    from alqa_dagster.defs.automation import ROUND_ASSETS
    from alqa_dagster.runner import full_range, materialize, register_cases

    workspace = tmp_path / "ws"
    shutil.copytree(production.ingested, workspace)
    config = write_campaign_config(tmp_path / "campaign.yaml", production.root / "campaign", workspace)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("ALQA_CAMPAIGN", str(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.run_storage.__class__.__name__ == "SqliteRunStorage"
            register_cases(instance, list(production.keys))
            materialize(instance, ROUND_ASSETS, full_range(instance))
    finally:
        torch.set_num_threads(threads)

    embedded = Catalog(workspace / "catalog").read("priority").query("round == 0").sort_values("rank").reset_index(drop=True)
    celery = Catalog(production.workspace / "catalog").read("priority").query("round == 0").sort_values("rank").reset_index(drop=True)
    assert len(embedded) == len(production.keys)
    assert list(embedded.case_id) == list(celery.case_id)
    assert embedded.score.tolist() == celery.score.tolist()  # exact, not approximate
    assert embedded.equals(celery)
    # the reason they agree: the trained weights are identical
    a = torch.load(workspace / "checkpoints" / "round_000" / "unet.pt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(production.workspace / "checkpoints" / "round_000" / "unet.pt", map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _runs_by_key(instance: dg.DagsterInstance) -> dict[str, list[dg.DagsterRun]]:
    out: dict[str, list] = {}
    for run in instance.get_runs(dg.RunsFilter(job_name="revision_job")):
        out.setdefault(run.tags.get("dagster/run_key"), []).append(run)
    return out


def _sensor_state(instance: dg.DagsterInstance):
    [state] = [s for s in instance.all_instigator_state() if s.instigator_name == "submissions_sensor"]
    return state


def _succeeded(instance: dg.DagsterInstance, run_key: str) -> bool:
    runs = _runs_by_key(instance).get(run_key, [])
    failed = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
    assert not failed, f"run {failed[0].run_id} for {run_key} ended {failed[0].status}"
    return any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_sensor_cursor_and_run_keys_survive_a_daemon_crash(production, record_property):
    from alqa_core.io.hashing import file_sha256
    from alqa_dagster.defs.automation import submission_run_key

    env, inbox = production.env, production.workspace / "inbox"
    truth = production.root / "campaign" / "ground_truth" / "labelsTr"
    queued = set(round_state(Catalog(production.workspace / "catalog")).queue)
    first, second = [c for c in production.keys if c not in queued][:2]  # not queued: no pseudo-label check
    daemon_args = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE_YAML)]

    sent = [write_submission(inbox, first, "dr_a", truth / f"{first}.nii.gz")]
    key_first = submission_run_key(first, file_sha256(truth / f"{first}.nii.gz"))

    t0 = time.monotonic()
    daemon = Background(daemon_args, env, production.root / "daemon_1.log")
    try:
        with production.instance() as instance:
            wait_until(lambda: _succeeded(instance, key_first), 300, "the daemon processes the first submission", daemon)
            cursor_before = _sensor_state(instance).instigator_data.cursor
        log.info("%.1f s: first submission's run succeeded; kill -9 the daemon", time.monotonic() - t0)
    finally:
        daemon.stop(signal.SIGKILL)  # a crash, not a shutdown
    crashes_injected = 1

    # while the daemon is down: a new submission, and the very same file submitted again
    label = truth / f"{second}.nii.gz"
    sent.append(write_submission(inbox, second, "dr_b", label))
    sent.append(write_submission(inbox, second, "dr_b", label))
    key_second = submission_run_key(second, file_sha256(label))

    daemon = Background(daemon_args, env, production.root / "daemon_2.log")
    try:
        with production.instance() as instance:
            wait_until(lambda: _succeeded(instance, key_second), 300, "the restarted daemon processes the new submission", daemon)
        log.info("%.1f s: after the restart, the new submission's run succeeded", time.monotonic() - t0)
    finally:
        daemon.stop(signal.SIGTERM)

    with production.instance() as instance:
        runs = _runs_by_key(instance)
        cursor_after = _sensor_state(instance).instigator_data.cursor
    subs = Catalog(production.workspace / "catalog").read("submissions")
    by_entry = subs.groupby("entry").status.agg(list).to_dict()

    # the figures first, so that a failure below still reports them
    run_once = {k: len(v) == 1 and v[0].status == dg.DagsterRunStatus.SUCCESS for k, v in runs.items()}
    key_of = {sent[0].name: key_first, sent[1].name: key_second, sent[2].name: key_second}
    processed_once = sum(1 for s in sent if len(by_entry.get(s.name, [])) == 1 and run_once.get(key_of[s.name], False))
    record_property("submissions_sent", len(sent))
    record_property("submissions_processed_once", processed_once)
    record_property("crashes_injected", crashes_injected)
    record_property("crashes_recovered", crashes_injected if processed_once == len(sent) else 0)
    record_property("rows_written", len(subs))
    record_property("rows_lost", len(sent) - len(by_entry))

    # one run per run key, each successful: nothing ran twice, nothing was skipped
    assert set(runs) == {key_first, key_second}
    assert all(len(r) == 1 and r[0].status == dg.DagsterRunStatus.SUCCESS for r in runs.values())
    # every entry validated exactly once; the byte-identical resubmission is recognised as a duplicate
    assert by_entry == {sent[0].name: ["accepted"], sent[1].name: ["accepted"], sent[2].name: ["duplicate"]}
    # the cursor, kept in PostgreSQL across the crash, moved from the first entry to the last; the inbox is empty
    assert sent[0].name in cursor_before and sent[2].name in cursor_after
    assert not any(p.suffix in (".json", ".gz") for p in inbox.iterdir())
    prov = Catalog(production.workspace / "catalog").read("provenance")
    assert "revised" in set(prov[prov.case_id == second].source)
