"""Start-up time of the light ``alqa`` commands (submit, confirm, status, grade), and who imports what.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 7] [--ref GIT_REF]

1. Writes a one-case campaign (a 6 mm phantom) in a temporary folder.
2. Baseline, in this process's loop: a bare interpreter start (``python -c pass``).
3. Each command as a user runs it (a fresh ``python -m alqa_dagster.cli ...``
   process), ``--repeat`` times; prints the median wall time and its ratio to
   the bare interpreter.
4. ``python -X importtime`` of ``alqa status``: the top importers by cumulative
   time, and whether torch, MONAI or dagster were imported at all.
5. ``--ref REF`` (e.g. the commit before a change): the same commands against
   that revision's code, checked out in a temporary git worktree and put first
   on ``PYTHONPATH``, so before/after come from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.config.template import write_template
from alqa_core.io.nifti import read_ct, read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.workspace import WorkspaceLayout

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "dagster")


def commands(case: str, label: Path) -> dict[str, list[str]]:
    return {
        "submit": ["submit", case, "--label", str(label), "--annotator", "dr_bench"],
        "confirm": ["confirm", case, "--annotator", "dr_bench"],
        "status": ["status"],
        "grade": ["grade", case, "1", "--grader", "dr_bench"],
    }


def timed(argv: list[str], env: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=env.get("BENCH_CWD"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def importtime(argv: list[str], env: dict) -> list[tuple[int, str]]:
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, check=True, capture_output=True, text=True, cwd=env.get("BENCH_CWD"))
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (p.strip() for p in line[len("import time:"):].split("|"))
        rows.append((int(cumulative), name))
    return rows


def worktree(ref: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), ref], check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ref", help="also time this git revision's code (a temporary worktree)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="alqa_bench_startup_") as tmp:
        tmp = Path(tmp)
        layout = write_campaign(tmp / "campaign", CampaignSpec(n_cases=1, seed=0, spacing_mm=(6.0, 6.0, 6.0)))
        case = layout.cases[0]
        config = write_template(tmp / "campaign.yaml", name="bench", datasets=tuple(str(p) for p in layout.dataset_roots))
        label = layout.root / case.ground_truth_path
        env = {**os.environ, "ALQA_CAMPAIGN": str(config), "ALQA_WORKSPACE": str(tmp / "ws")}
        ct = read_ct(layout.root / case.image_path)  # the case's work package, so `confirm` has one to confirm
        write_work_package(WorkspaceLayout(tmp / "ws").work_packages(case.plan.case_id), case.plan.case_id, 0, ct, read_label(label),
                           np.zeros((len(DEFAULT_ORGAN_TABLE), *ct.shape), np.uint8), ("liver",), DEFAULT_ORGAN_TABLE)
        bare = timed([sys.executable, "-c", "pass"], env, args.repeat)
        print(f"bare interpreter start: {bare * 1000:.0f} ms (baseline)")
        trees = {"this tree": None}
        if args.ref:
            trees[f"ref {args.ref}"] = worktree(args.ref, tmp / "ref")
        try:
            for name, tree in trees.items():
                run_env = dict(env)
                if tree is not None:
                    run_env["PYTHONPATH"] = str(tree)
                    run_env["BENCH_CWD"] = str(tree)
                print(f"\n{name}: median of {args.repeat} runs")
                print(f"  {'command':8s} {'wall ms':>8s} {'x bare':>7s}")
                for cmd, argv in commands(case.plan.case_id, label).items():
                    t = timed([sys.executable, "-m", "alqa_dagster.cli", *argv], run_env, args.repeat)
                    print(f"  {cmd:8s} {t * 1000:8.0f} {t / bare:7.1f}")
                rows = importtime(["-m", "alqa_dagster.cli", "status"], run_env)
                loaded = {n.split(".")[0] for _, n in rows}
                print("  heavy packages imported by `alqa status`: " + (", ".join(h for h in HEAVY if h in loaded) or "none"))
                top = sorted((r for r in rows if "." not in r[1]), reverse=True)[:8]
                print("  top-level imports by cumulative time: " + ", ".join(f"{n} {c / 1000:.0f} ms" for c, n in top))
        finally:
            if args.ref:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "ref")], check=False)


if __name__ == "__main__":
    main()
