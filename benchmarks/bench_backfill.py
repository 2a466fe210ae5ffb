"""Batched backfill: N cases through the ingest assets in ONE Dagster run, against per-case compute.

    .venv/bin/python benchmarks/bench_backfill.py [--cases 200] [--single-runs 5]

1. Generates an N-case phantom campaign (6 mm, small) and registers the cases.
2. Baseline, in this process: the same core functions the assets call
   (ingest_scan, ingest_label, preprocess_scan), case by case, summed.
3. The real thing: ``dagster asset materialize --partition-range first...last``
   (one run, BackfillPolicy.single_run) in a subprocess on a sqlite instance.
4. A few one-partition runs, to show what N separate runs would cost.
Prints wall times and ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from alqa_core.config.campaign import load_campaign
from alqa_core.config.template import write_template
from alqa_core.ingest.cases import index_campaign, ingest_label, ingest_scan, preprocess_scan
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.workspace import WorkspaceLayout

ROOT = Path(__file__).resolve().parents[1]
SELECT = "raw_scans,original_labels,preprocessed_volumes"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--single-runs", type=int, default=5)
    ap.add_argument("--in-process", action="store_true", help="run the steps in-process instead of one subprocess per step")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alqa_backfill_"))
    t = time.perf_counter()
    write_campaign(work / "campaign", CampaignSpec(n_cases=args.cases, seed=1, spacing_mm=(6.0, 6.0, 6.0), test_fraction=0.0), workers=2)
    print(f"executor: {'in_process' if args.in_process else 'multiprocess (default)'}")
    print(f"generated {args.cases} phantom cases in {time.perf_counter() - t:.1f} s ({work})")
    datasets = tuple(str(p) for p in sorted((work / "campaign" / "datasets").iterdir()))
    cfg_path = write_template(work / "campaign.yaml", name="bench", workspace_root=str(work / "ws"), datasets=datasets, spacing_mm=6.0)
    cfg = load_campaign(cfg_path)
    index = index_campaign(cfg)
    keys = sorted(index.cases)

    # baseline: per-case compute of the three assets, in this process, into a scratch workspace
    scratch = WorkspaceLayout(work / "baseline_ws")
    t = time.perf_counter()
    for c in keys:
        s = ingest_scan(index.cases[c], scratch.raw_scan(c))
        ingest_label(index.cases[c], index.dataset_of(c), cfg.organ_table, s.path, scratch.original_label(c))
        preprocess_scan(s.path, scratch.preprocessed(c), scratch.grid_record(c), cfg.preprocess)
    compute_s = time.perf_counter() - t
    print(f"baseline: per-case compute summed over {len(keys)} cases: {compute_s:.1f} s ({compute_s / len(keys) * 1000:.0f} ms/case)")

    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "ALQA_CAMPAIGN": str(cfg_path)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("cases", keys)
    cli = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "alqa_dagster.definitions", "--select", SELECT]
    if args.in_process:  # one process for all steps: no per-step re-import of torch/MONAI/Dagster (~7 s each here)
        cli += ["--config-json", '{"execution": {"config": {"in_process": {}}}}']
    t = time.perf_counter()
    subprocess.run(cli + ["--partition-range", f"{keys[0]}...{keys[-1]}"], env=env, check=True, capture_output=True)
    batched_s = time.perf_counter() - t
    print(f"batched backfill: 1 run over {len(keys)} partitions: {batched_s:.1f} s wall "
          f"({batched_s / compute_s:.2f}x the summed per-case compute; overhead {batched_s - compute_s:.1f} s)")

    t = time.perf_counter()
    for c in keys[: args.single_runs]:
        subprocess.run(cli + ["--partition", c], env=env, check=True, capture_output=True)
    per_run = (time.perf_counter() - t) / max(args.single_runs, 1)
    print(f"one-partition runs: {per_run:.2f} s each -> {len(keys)} of them would take ~{per_run * len(keys):.0f} s "
          f"({per_run * len(keys) / batched_s:.1f}x the batched backfill)")


if __name__ == "__main__":
    main()
