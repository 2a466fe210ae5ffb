"""A full round over N phantom cases through Dagster, against the same core functions called directly.

    .venv/bin/python benchmarks/bench_scale.py [--cases 50 200 1000] [--spacing 6] [--chunk 0] [--work DIR]

Per N, in a subprocess of its own (so each peak RSS is its own):

1. A phantom campaign of N cases (``--spacing`` mm) with two external members per
   case made from the hidden ground truth, tool B over-segmenting the liver (as
   tests/dagster/test_campaign.py::external_campaign), so no network runs and
   attention has something to find. Generated in a separate process first (and
   kept under ``--work`` for a rerun), so it is in neither figure.
2. The real thing, in the measuring process: ``alqa ingest`` then ``alqa round``
   (headless: Dagster runs in a sqlite instance, the embedded profile's
   dagster.yaml, per-case steps in runs of ``--chunk`` cases; 0 takes
   ``batch.cases_per_run`` from the campaign). The wall and CPU time of both
   commands is the Dagster figure; ingest + predictions + attention, the
   issue's measure, is split out from the runs' step times. The peak RSS is
   read here, before the baseline.
3. Baseline, in the same process: every core function the round's assets and
   checks call (ingest, previews, training set, predictions, attention,
   reassembly, priority, queue with work packages, evaluation, the checks'
   grid reads), over all N cases (attention and reassembly per chunk, as the
   assets call them), into a scratch workspace. Imports are warmed first, so
   neither side pays them; both run single-threaded (see SINGLE_THREADED).
4. Dagster's own floor on this machine: two no-op per-case assets over the
   cases, per (asset, case), so the overhead it cannot go below is visible.

Prints, per N: wall and CPU time of both sides, overhead = Dagster / core - 1,
and the peak RSS after the Dagster runs; then its growth from the smallest N.
Targets (issue 12): overhead <= 10% at 1,000 cases; peak RSS x1.2 at most
from 50 to 1,000 cases.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVER = 5  # organ-table value tool B over-segments


def generate(work: Path, n: int, spacing: float) -> Path:
    """The N-case campaign with toolA (= ground truth) and toolB (liver dilated) as external members; its config path."""
    import numpy as np
    from scipy import ndimage

    from alqa_core.config.template import write_template
    from alqa_core.io.nifti import read_label, write_nifti
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign

    campaign, cfg = work / "campaign", work / "campaign.yaml"
    if cfg.exists():
        return cfg
    if campaign.exists():
        shutil.rmtree(campaign)
    write_campaign(campaign, CampaignSpec(n_cases=n, seed=1, spacing_mm=(spacing,) * 3, hard_fraction=0.25, test_fraction=0.0), workers=2)
    truth = campaign / "ground_truth" / "labelsTr"
    for ds in sorted((campaign / "datasets").iterdir()):
        for img in sorted((ds / "imagesTr").glob("*_0000.nii.gz")):
            case = img.name[: -len("_0000.nii.gz")]
            gt = read_label(truth / f"{case}.nii.gz")
            write_nifti(ds / "predictions" / "toolA" / f"{case}.nii.gz", np.asarray(gt.array), gt.affine)
            other = np.array(gt.array)
            other[ndimage.binary_dilation(other == LIVER, iterations=2) & (other == 0)] = LIVER
            write_nifti(ds / "predictions" / "toolB" / f"{case}.nii.gz", other, gt.affine)
    datasets = tuple(str(p) for p in sorted((campaign / "datasets").iterdir()))
    tmp = write_template(work / "campaign.tmp.yaml", name=f"scale{n}", workspace_root=str(work / "ws"), datasets=datasets, architectures=(), spacing_mm=spacing)
    members = "external_members:\n  - name: toolA\n    class_map: organ_table\n  - name: toolB\n    class_map: organ_table"
    tmp.write_text(tmp.read_text().replace("external_members: []", members))
    tmp.rename(cfg)
    return cfg


def _timed(times: dict, name: str, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    times[name] = times.get(name, 0.0) + time.perf_counter() - t
    return out


def baseline(cfg_path: Path, scratch: Path) -> dict[str, float]:
    """Seconds per asset of the core functions the round's assets and checks call, over every case, in this process."""
    from alqa_core.annotation.labelled.reassemble_cases import reassemble_cases
    from alqa_core.annotation.queue.round_queue import priority_for_round, queue_round
    from alqa_core.attention.case import attention_for_cases
    from alqa_core.case_errors import failed_cases, run_per_case
    from alqa_core.catalog import Catalog
    from alqa_core.checks import grid_mismatches, unknown_label_values
    from alqa_core.config.campaign import load_campaign
    from alqa_core.ensemble.predict import predict_round
    from alqa_core.evaluation.report import evaluate_round, summary_frame
    from alqa_core.ingest.cases import index_campaign, ingest_case_label, ingest_case_scan, preprocess_case, write_scan_preview
    from alqa_core.training.fit import train_round
    from alqa_core.training.round_start import open_round
    from alqa_core.training.training_set import holdout_cases
    from alqa_core.workspace import WorkspaceLayout

    cfg = load_campaign(cfg_path)
    layout, cat, table = WorkspaceLayout(scratch), Catalog(scratch / "catalog"), cfg.organ_table
    times: dict[str, float] = {}
    index = _timed(times, "raw_scans", index_campaign, cfg)
    keys = sorted(index.cases)

    def raw():
        batch = run_per_case(cat, "raw_scans", keys, lambda c: ingest_case_scan(index, c, layout, cat))
        for c, s in batch.done.items():
            write_scan_preview(layout.preview("raw_scans", c), s.path)

    def labels():
        batch = run_per_case(cat, "original_labels", keys, lambda c: ingest_case_label(index, c, table, layout))
        for c, s in batch.done.items():
            write_scan_preview(layout.preview("original_labels", c), layout.raw_scan(c), s.path, table)
        return grid_mismatches((c, layout.original_label(c), layout.raw_scan(c)) for c in keys)

    _timed(times, "raw_scans", raw)
    _timed(times, "original_labels", labels)
    _timed(times, "preprocessed_volumes", run_per_case, cat, "preprocessed_volumes", keys, lambda c: preprocess_case(c, layout, cfg.preprocess))
    opened = _timed(times, "training_set", open_round, cat, layout, cfg)
    t = opened.round_index
    _timed(times, "model_checkpoints", train_round, layout, cat, cfg, "cpu")
    _timed(times, "soft_predictions", predict_round, layout, cat, cfg, keys, t, "cpu")

    # attention and reassembly keep a chunk's arrays: called per batch.cases_per_run, as the assets do
    chunks = [keys[i : i + cfg.batch.cases_per_run] for i in range(0, len(keys), cfg.batch.cases_per_run)]

    def attention():
        for chunk in chunks:
            attention_for_cases(layout, cat, chunk, cfg.attention, table, t)
        return grid_mismatches((c, layout.attention_map(c, t), layout.raw_scan(c)) for c in keys)

    def reassemble():
        for chunk in chunks:
            reassemble_cases(layout, cat, chunk, table, t)
        done = [c for c in keys if layout.reassembled_label(c).exists()]
        return unknown_label_values(((c, layout.reassembled_label(c)) for c in done), table), grid_mismatches((c, layout.reassembled_label(c), layout.raw_scan(c)) for c in done)

    def evaluation():
        cases = cat.read("cases")
        metrics = evaluate_round(layout, cases, holdout_cases(cases, cfg.evaluation.holdout_fraction), table, t, cfg.evaluation.nsd_tolerance_mm)
        cat.write("metrics", f"round_{t:03d}", metrics)
        return summary_frame(metrics)

    _timed(times, "attention_maps", attention)
    _timed(times, "reassembled_labels", reassemble)
    _timed(times, "priority_list", priority_for_round, cat, t)
    _timed(times, "annotation_queue", queue_round, layout, cat, cfg, t)
    _timed(times, "evaluation_report", evaluation)
    assert not failed_cases(cat, None), "the baseline refused a case"
    return times


def _warm_imports() -> None:
    """Import everything both sides use (scipy, MONAI metrics, torch, Dagster), so neither pays the imports inside its figure."""
    for module in ("alqa_core.evaluation.report", "alqa_core.training.data"):
        importlib.import_module(module)
    from alqa_dagster.definitions import defs

    defs()


def _step_runs(home: Path) -> list:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.run_id for r in instance.get_runs()]


def _step_seconds(home: Path) -> dict[str, float]:
    """Seconds per asset step summed over the instance's runs (from the step start/success events)."""
    import dagster as dg

    out: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.start_time and stats.end_time:
                    out[stats.step_key] = out.get(stats.step_key, 0.0) + stats.end_time - stats.start_time
    return out


STORAGE_VAR = "ALQA_BENCH_STORAGE"


def _fresh_home(home: Path, database: str) -> Path:
    """A Dagster home: the embedded profile's dagster.yaml (sqlite under ``home``), or with ``--storage postgres``
    deploy/production's on a fresh database ``database`` of the throwaway server."""
    home.mkdir()
    if os.environ.get(STORAGE_VAR) != "postgres":
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        return home
    import psycopg2

    con = psycopg2.connect(host=os.environ["DAGSTER_PG_HOST"], port=os.environ["DAGSTER_PG_PORT"], user=os.environ["DAGSTER_PG_USER"],
                           password=os.environ["DAGSTER_PG_PASSWORD"], dbname="postgres")
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}"')
        cur.execute(f'CREATE DATABASE "{database}"')
    con.close()
    os.environ["DAGSTER_PG_DB"] = database
    shutil.copyfile(ROOT / "deploy" / "production" / "dagster.yaml", home / "dagster.yaml")
    return home


PER_CASE_ASSETS = 6  # raw_scans, original_labels, preprocessed_volumes, soft_predictions, attention_maps, reassembled_labels


def event_floor(home: Path, n: int) -> tuple[float, float]:
    """Dagster's own cost per (asset, case) on this instance kind: two no-op per-case assets over ``n`` cases.

    Returns (wall s, CPU s) per materialized (asset, partition): what every per-case asset pays
    whatever its body does (the run's events, on this disk).
    """
    import dagster as dg

    parts = dg.DynamicPartitionsDefinition(name="cases")

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def noop_a():
        return dg.MaterializeResult()

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run(), deps=[noop_a])
    def noop_b():
        return dg.MaterializeResult()

    _fresh_home(home, f"alqa_floor_{n}")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        keys = [f"case{i:05d}" for i in range(n)]
        instance.add_dynamic_partitions("cases", keys)
        cpu, t = time.process_time(), time.perf_counter()
        dg.materialize([noop_a, noop_b], instance=instance, tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
        return (time.perf_counter() - t) / (2 * n), (time.process_time() - cpu) / (2 * n)


def measure(work: Path, chunk: int) -> dict:
    """The child: warm imports, ``alqa ingest`` + ``alqa round`` (Dagster), then the baseline, in this process."""
    cfg_path = work / "campaign.yaml"
    for old in ("ws", "baseline_ws", "dagster_home", "floor_home"):
        shutil.rmtree(work / old, ignore_errors=True)
    home = _fresh_home(work / "dagster_home", f"alqa_scale_{work.name}")
    os.environ.update(DAGSTER_HOME=str(home), ALQA_CAMPAIGN=str(cfg_path), ALQA_LOG_LEVEL="ERROR")
    os.environ.pop("ALQA_WORKSPACE", None)
    t = time.perf_counter()
    _warm_imports()
    import_s, rss_start = time.perf_counter() - t, _peak_mb()

    from alqa_core.config.campaign import load_campaign
    from alqa_core.workspace import WorkspaceLayout
    from alqa_dagster import headless

    cfg = load_campaign(cfg_path)
    layout = WorkspaceLayout(cfg.workspace_root.resolve())
    chunk = chunk or cfg.batch.cases_per_run
    load = [os.getloadavg()[0]]
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            cpu, t = time.process_time(), time.perf_counter()
            headless.ingest(cfg, layout, chunk)
            ingest_s = time.perf_counter() - t
            t = time.perf_counter()
            headless.run_round(layout, chunk)
            round_s = time.perf_counter() - t
            dagster_cpu = time.process_time() - cpu
        finally:
            sys.stdout = stdout
    # the Dagster side's peak, before the baseline runs (which is chunked the same way)
    rss_dagster = _peak_mb()
    runs, steps = _step_runs(home), _step_seconds(home)
    load.append(os.getloadavg()[0])
    cpu = time.process_time()
    compute = baseline(cfg_path, work / "baseline_ws")
    compute_cpu = time.process_time() - cpu
    load.append(os.getloadavg()[0])
    cases = len(list((layout.root / "raw_scans").glob("*.nii.gz")))
    floor_wall, floor_cpu = event_floor(work / "floor_home", min(cases, 200))
    return {
        "cases": cases,
        "chunk": chunk,
        "runs": len(runs),
        "storage": os.environ.get(STORAGE_VAR, "sqlite"),
        "import_s": import_s,
        "ingest_s": ingest_s,
        "round_s": round_s,
        "dagster_cpu_s": dagster_cpu,
        "compute": compute,
        "compute_cpu_s": compute_cpu,
        "steps": steps,
        "floor_ms": (floor_wall * 1000, floor_cpu * 1000),
        "rss_start_mb": rss_start,
        "rss_dagster_mb": rss_dagster,
        "rss_peak_mb": _peak_mb(),
        "load": load,
    }


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: both sides single-threaded (torch, BLAS): on a shared machine a thread pool's spin-waits made the same
#: MONAI metric 10x slower on one side than on the other
SINGLE_THREADED = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

INGEST = ("raw_scans", "original_labels", "preprocessed_volumes")
PREDICT = ("soft_predictions", "attention_maps")


def _report(rows: list[dict]) -> None:
    print()
    print("| cases | Dagster runs | Dagster wall s | core wall s | overhead (wall) | Dagster CPU s | core CPU s | overhead (CPU) "
          "| ingest+predictions+attention: steps s / core s / overhead | peak RSS MB (Dagster) | x smallest N | load avg |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    first = rows[0]["rss_dagster_mb"]
    for r in rows:
        wall, compute = r["ingest_s"] + r["round_s"], sum(r["compute"].values())
        sub_compute = sum(v for k, v in r["compute"].items() if k in INGEST + PREDICT)
        # the measure: the steps of those assets as Dagster timed them (step start to success)
        sub_wall = sum(v for k, v in r["steps"].items() if k in INGEST + PREDICT)
        print(
            f"| {r['cases']} | {r['runs']} | {wall:.1f} | {compute:.1f} | {wall / compute - 1:+.1%} | {r['dagster_cpu_s']:.1f} | {r['compute_cpu_s']:.1f} "
            f"| {r['dagster_cpu_s'] / r['compute_cpu_s'] - 1:+.1%} | {sub_wall:.1f} / {sub_compute:.1f} / {sub_wall / sub_compute - 1:+.1%} "
            f"| {r['rss_dagster_mb']:.0f} | {r['rss_dagster_mb'] / first:.2f} | {' / '.join(f'{x:.1f}' for x in r['load'])} |"
        )
    print("(load avg: the machine's 1-min load at the start, between the two sides and at the end; this process is one of them)")
    print()
    for r in rows:
        wall_ms, cpu_ms = r["floor_ms"]
        events = PER_CASE_ASSETS * r["cases"]
        print(f"{r['cases']} cases: Dagster's own floor here, no-op per-case assets: {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU per (asset, case); "
              f"x {events} (asset, case) = {events * wall_ms / 1000:.0f} s wall, {events * cpu_ms / 1000:.0f} s CPU of the overhead")
    print()
    print("per asset, largest N: Dagster step seconds (summed over runs) vs core seconds")
    r = rows[-1]
    for name, c in r["compute"].items():
        s = r["steps"].get(name, float("nan"))
        print(f"  {name:22s} step {s:7.2f} s  core {c:7.2f} s  ({s / c - 1:+.0%})" if c > 0 else f"  {name:22s} step {s:7.2f} s  core {c:7.2f} s")
    other = sum(v for k, v in r["steps"].items() if k not in r["compute"])
    print(f"  {'(checks)':22s} step {other:7.2f} s  (the core side counts them under their assets)")
    print(f"  outside the steps (run start/end, partitions, catalog reads in the commands): "
          f"{r['ingest_s'] + r['round_s'] - sum(r['steps'].values()):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--spacing", type=float, default=6.0)
    ap.add_argument("--chunk", type=int, default=0, help="cases per Dagster run; 0: the campaign's batch.cases_per_run")
    ap.add_argument("--work", type=Path, default=None, help="keep campaigns here (reused by a rerun); default: a temporary folder")
    ap.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite",
                    help="Dagster's storage: the embedded profile's sqlite, or deploy/production's PostgreSQL on a throwaway "
                    "server from scripts/services.sh (which runs with fsync off: no disk sync in its figures)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate is not None:
        generate(args.child, args.generate, args.spacing)
        return
    if args.child is not None:
        print(json.dumps(measure(args.child, args.chunk)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="alqa_scale_"))
    env = dict(SINGLE_THREADED, **{STORAGE_VAR: args.storage})
    services = work / f"services_{os.getpid()}"
    if args.storage == "postgres":
        started = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start", str(services)], capture_output=True, text=True, check=False)
        if started.returncode != 0:
            sys.exit(f"postgres did not start: {started.stdout}{started.stderr}")
        env.update(line.split("=", 1) for line in (services / "services.env").read_text().splitlines() if line.startswith("DAGSTER_PG_"))
    try:
        rows = _measure_all(args, work, env)
    finally:
        if args.storage == "postgres":
            subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", str(services)], capture_output=True, check=False)
    print(f"\nDagster storage: {args.storage}{' (throwaway server, fsync off)' if args.storage == 'postgres' else ' (embedded profile)'}; "
          f"this disk's fsync: {_fsync_ms(work):.1f} ms")
    _report(rows)


def _fsync_ms(folder: Path, n: int = 50) -> float:
    """The latency of one fsync on ``folder``'s disk (what every sqlite commit waits for)."""
    path = folder / ".fsync_probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        t = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x")
            os.fsync(fd)
        return (time.perf_counter() - t) / n * 1000
    finally:
        os.close(fd)
        path.unlink()


def _measure_all(args, work: Path, env: dict) -> list[dict]:
    rows = []
    for n in args.cases:
        folder = work / f"n{n}_{args.spacing:g}mm"
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", str(folder), "--generate", str(n), "--spacing", str(args.spacing)], check=True)
        print(f"{n} cases at {args.spacing:g} mm ready in {time.perf_counter() - t:.0f} s ({folder})", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--chunk", str(args.chunk)], capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            sys.exit(f"the {n}-case run failed:\n{out.stderr[-4000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {n} cases: Dagster {r['ingest_s'] + r['round_s']:.1f} s (ingest {r['ingest_s']:.1f} + round {r['round_s']:.1f}), "
              f"core {sum(r['compute'].values()):.1f} s, peak RSS {r['rss_dagster_mb']:.0f} MB after the Dagster runs "
              f"({r['rss_start_mb']:.0f} after imports, {r['rss_peak_mb']:.0f} after the baseline)", flush=True)
    return rows


if __name__ == "__main__":
    main()
