"""The ``alqa`` command line: init, demo, submit, confirm, status, grade, export, simulate.

Every command is a thin shell over alqa_core and the Dagster definitions.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from alqa_core.errors import AlqaInputError


class Progress:
    """A one-line-per-step progress display with elapsed times."""

    def __init__(self, total_steps: int):
        self.total, self.step, self.t0 = total_steps, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        counter = f"{self.step}/{self.total}" if self.total else str(self.step)
        print(f"[{counter}] {time.perf_counter() - self.t0:6.1f}s  {message}", flush=True)

    def done(self, message: str) -> None:
        print(f"[done] {time.perf_counter() - self.t0:6.1f}s  {message}", flush=True)


def cmd_init(args) -> int:
    from alqa_core.config.template import write_template

    path = write_template(Path(args.path), name=args.name, datasets=tuple(args.dataset) or ("/path/to/Dataset001_Example",))
    print(f"wrote {path}; edit it, then: export ALQA_CAMPAIGN={path.resolve()}")
    return 0


def cmd_demo(args) -> int:
    from alqa_dagster import demo

    return demo.run_demo(
        Path(args.dir), n_cases=args.cases, start_ui=not args.no_ui, port=args.port, progress=Progress(demo.STEPS)
    )


def cmd_submit(args) -> int:
    from alqa_core.annotation.inbox import write_submission

    layout = _layout()
    slices = _parse_slices(args.slices)
    entry = write_submission(
        layout.inbox, args.case, args.annotator, Path(args.label), "revised", tuple(args.emptied or ()), args.note or "",
        annotated_slices=slices,
    )
    scope = f"slices {','.join(map(str, slices))} only" if slices else "whole volume"
    print(f"submitted {args.case} ({scope}) as inbox entry {entry.name}; the submissions sensor validates it on its next tick")
    return 0


def _parse_slices(text: str | None) -> tuple[int, ...]:
    """``12,17,30-32`` -> (12, 17, 30, 31, 32); None -> () (a whole-volume revision)."""
    if text is None:
        return ()
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            first, last = 0, -1
        if not part or first < 0 or last < first:
            raise AlqaInputError(None, f"--slices: {part!r} is not a slice index or a range like 30-32")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def cmd_confirm(args) -> int:
    from alqa_core.annotation.inbox import write_submission

    entry = write_submission(_layout().inbox, args.case, args.annotator, None, "confirmed", note=args.note or "")
    print(f"confirmed {args.case} (inbox entry {entry.name})")
    return 0


def cmd_status(args) -> int:
    from alqa_core.annotation.status import campaign_status

    print(campaign_status(_layout()).render())
    return 0


def cmd_grade(args) -> int:
    from alqa_core.annotation.rounds import current_round
    from alqa_core.catalog import Catalog
    from alqa_core.qa.grades import QAGrade, import_grades_csv, record_grade

    layout = _layout()
    catalog = Catalog(layout.catalog)
    round_index = args.round if args.round is not None else max(current_round(catalog), 0)
    if args.csv:
        n = import_grades_csv(Path(args.csv), catalog, grader_default=args.grader, round_default=round_index)
        print(f"imported {n} grades from {args.csv}")
        return 0
    if args.case is None or args.grade is None:
        raise AlqaInputError(None, "give CASE and GRADE (0 success, 1 usable, 2 failure), or --csv FILE")
    record_grade(catalog, QAGrade(args.case, round_index, int(args.grade), args.grader, note=args.note or ""))
    print(f"graded {args.case} {args.grade} in round {round_index} (a regrade adds a row; the latest counts)")
    return 0


def cmd_export(args) -> int:
    from alqa_core.config.campaign import load_campaign
    from alqa_core.export.nnunet import export_nnunet

    result = export_nnunet(_layout(), Path(args.out), load_campaign(os.environ["ALQA_CAMPAIGN"]).organ_table, args.name)
    print(f"exported {len(result.cases)} cases to {result.root} (nnU-Net v2 raw layout, provenance.csv)")
    return 0


def cmd_simulate(args) -> int:
    from alqa_core.catalog import Catalog
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
    from alqa_core.simulator.run import run_simulation, simulation_config
    from alqa_core.workspace import validate_case_id

    validate_case_id(args.name)  # the catalog partition: check it before hours of simulation
    if args.members == "error-model":
        return _simulate_error_model(args)
    if not args.members.isdigit() or int(args.members) < 1:
        raise AlqaInputError(None, f"--members: 'error-model' or a number of members per architecture, got {args.members!r}")
    if args.campaign is None:
        raise AlqaInputError(None, "give the phantom campaign root (trained members need one; --phantoms N writes it)")
    root = Path(args.campaign)
    if args.phantoms:
        if root.exists():
            raise AlqaInputError(root, "exists; --phantoms writes a new phantom campaign there (drop --phantoms to reuse it)")
        mm = args.phantom_spacing_mm or 5.0
        write_campaign(root, CampaignSpec(n_cases=args.phantoms, seed=args.seed, spacing_mm=(mm,) * 3))
        print(f"wrote a phantom campaign of {args.phantoms} cases at {mm:g} mm to {root}")
    config = simulation_config(
        [s.strip() for s in (args.strategies or "attention,uss,outliers,fg_random").split(",") if s.strip()], args.rounds, 30.0 if args.budget is None else args.budget,
        architectures=args.arch or ("unet",), members_per_arch=int(args.members), model_size=args.model_size, max_epochs=args.epochs,
        finetune_max_epochs=args.finetune_epochs, iterations_per_epoch=args.iterations, patch_size_vox=args.patch,
        lr=args.lr, spacing_mm=args.spacing_mm, seed=args.seed, num_threads=args.threads, device=args.device,
    )
    out = Path(args.out)
    catalog = Catalog(out / "catalog")
    progress = Progress(0)
    run = run_simulation(root, out, config, catalog=catalog, name=args.name,
                         progress=lambda p: progress(f"{p.stage} {p.strategy} round {p.round_index}: {p.message}"))
    progress.done(f"report: {run.report.report_md} (rounds.csv, test_metrics.csv, dice_vs_effort.png); catalog table 'simulation'")
    print(run.report.report_md.read_text())
    return 0


def _simulate_error_model(args) -> int:
    """``alqa simulate --members error-model``: error-model ensembles, no training (alqa_core.simulator.evidence)."""
    from alqa_core.catalog import Catalog
    from alqa_core.simulator.run import evidence_config, run_evidence_simulation

    strategies = [s.strip() for s in (args.strategies or "attention,outliers,uss,fg_random").split(",") if s.strip()]
    config = evidence_config(
        n_cases=args.cases, seeds=_parse_slices(args.seeds), rounds=args.rounds, strategies=strategies, budget_per_round=args.budget,
        spacing_mm=args.phantom_spacing_mm or 4.0, n_members=args.ensemble_size, failure_share=args.failure_share,
        shared_share=args.shared_share, label_paths=args.labels or (), class_map=args.class_map, workers=args.workers,
    )
    out = Path(args.out)
    progress = Progress(0)
    run = run_evidence_simulation(out, config, catalog=Catalog(out / "catalog"), name=args.name, tune=args.tune, tuning_cases=args.tune_cases,
                                  progress=progress, command=shlex.join(["alqa", *args.argv]))
    progress.done(f"report: {run.report.report_md} (recall_at_depth.png, dataset_dice_vs_effort.png, CSVs); catalog table 'simulation'")
    print(run.report.report_md.read_text())
    return 0


def _layout():
    from alqa_core.config.campaign import load_campaign
    from alqa_core.workspace import WorkspaceLayout

    path = os.environ.get("ALQA_CAMPAIGN")
    if not path:
        raise AlqaInputError(None, "set ALQA_CAMPAIGN to the campaign YAML (alqa init writes one)")
    cfg = load_campaign(path)
    root = Path(os.environ["ALQA_WORKSPACE"]) if os.environ.get("ALQA_WORKSPACE") else cfg.workspace_root
    return WorkspaceLayout(root.resolve())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alqa", description="Active-learning annotation of 3D CT organ segmentation, on Dagster.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="write a commented campaign config template")
    s.add_argument("path", nargs="?", default="alqa_campaign.yaml")
    s.add_argument("--name", default="my_campaign")
    s.add_argument("--dataset", action="append", default=[], help="a dataset root in nnU-Net v2 raw layout (repeatable)")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("demo", help="phantom campaign -> one round up to the annotation queue -> Dagster UI")
    s.add_argument("--dir", default="demo", help="folder for the demo's campaign, workspace and Dagster home")
    s.add_argument("--cases", type=int, default=24)
    s.add_argument("--no-ui", action="store_true", help="stop after the round instead of starting dagster dev")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("submit", help="hand in a revised label for a queued case")
    s.add_argument("case")
    s.add_argument("--label", required=True)
    s.add_argument("--annotator", required=True)
    s.add_argument("--emptied", action="append", help="an organ deliberately emptied (repeatable)")
    s.add_argument("--slices", help="a slice-level revision: only these slices (e.g. 12,17,30-32; third voxel axis) were revised")
    s.add_argument("--note")
    s.set_defaults(fn=cmd_submit)

    s = sub.add_parser("confirm", help="confirm that a case's pseudo label needs no revision")
    s.add_argument("case")
    s.add_argument("--annotator", required=True)
    s.add_argument("--note")
    s.set_defaults(fn=cmd_confirm)

    s = sub.add_parser("status", help="round, queue, submissions, rejections, convergence")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("grade", help="record a QA grade: 0 success, 1 usable, 2 failure (or import a CSV)")
    s.add_argument("case", nargs="?")
    s.add_argument("grade", nargs="?", choices=["0", "1", "2"])
    s.add_argument("--grader", required=True)
    s.add_argument("--round", type=int)
    s.add_argument("--note")
    s.add_argument("--csv", help="columns case_id,grade[,round,grader,graded_at,note]")
    s.set_defaults(fn=cmd_grade)

    s = sub.add_parser("simulate", help="compare selection strategies at equal effort on a phantom campaign (oracle annotator)")
    s.add_argument("campaign", nargs="?", help="a phantom campaign root (with ground_truth/manifest.csv); not needed with --members error-model")
    s.add_argument("--out", required=True, help="folder for the simulator's workspace, report and catalog")
    s.add_argument("--phantoms", type=int, default=0, help="first write a new phantom campaign of N cases at CAMPAIGN")
    s.add_argument("--phantom-spacing-mm", type=float, help="phantom spacing (default 5 for --phantoms, 4 for error-model cases)")
    s.add_argument("--strategies", help="comma-separated: attention, outliers, uss, rss, uvs, rvs, fg_random "
                   "(default attention,uss,outliers,fg_random; error-model: attention,outliers,uss,fg_random)")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--budget", type=float, help="effort per round (slice units: a volume of K slices costs 1+(K-1)/3); "
                   "default 30, error-model: 5%% of the pool labelled in full")
    s.add_argument("--arch", action="append", help="architecture of the ensemble (repeatable; default unet)")
    s.add_argument("--members", default="2", help="members per architecture (differing in seed), or 'error-model': "
                   "members made from the ground truth with controlled errors, no training")
    s.add_argument("--model-size", default="tiny", choices=["tiny", "full"], help="network size preset (trained members)")
    s.add_argument("--cases", type=int, default=1000, help="error-model: cases per seed")
    s.add_argument("--seeds", default="0-4", help="error-model: seeds (e.g. 0-4 or 0,2)")
    s.add_argument("--ensemble-size", type=int, default=3, help="error-model: members per case")
    s.add_argument("--failure-share", type=float, default=0.05, help="error-model: share of cases drawn as failures")
    s.add_argument("--shared-share", type=float, default=0.1, help="error-model: share of errors every member makes (the detection floor)")
    s.add_argument("--labels", action="append", help="error-model: ground-truth label files instead of phantoms (repeatable)")
    s.add_argument("--class-map", default="total", help="error-model: class-map preset of --labels (default total: TotalSegmentator v2)")
    s.add_argument("--tune", action="store_true", help="error-model: first tune the attention settings on seeds 100-104")
    s.add_argument("--tune-cases", type=int, help="error-model: cases per tuning seed (default --cases)")
    s.add_argument("--workers", type=int, default=2, help="error-model: processes making cases")
    s.add_argument("--epochs", type=int, default=8, help="epochs of M_0")
    s.add_argument("--finetune-epochs", type=int, default=4)
    s.add_argument("--iterations", type=int, default=12, help="iterations per epoch")
    s.add_argument("--patch", type=int, default=32, help="cubic patch edge in voxels")
    s.add_argument("--lr", type=float, help="default 1e-3 from scratch, 1e-4 fine-tuning")
    s.add_argument("--spacing-mm", type=float, help="preprocessing spacing (default: the campaign's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, help="torch threads")
    s.add_argument("--device", default="auto")
    s.add_argument("--name", default="simulation", help="the catalog partition of the result rows")
    s.set_defaults(fn=cmd_simulate)

    s = sub.add_parser("export", help="write the reassembled dataset in nnU-Net v2 raw layout")
    s.add_argument("out")
    s.add_argument("--name", default="Dataset500_alqa")
    s.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed, for reports
    try:
        return args.fn(args)
    except (AlqaInputError, FileExistsError, RuntimeError) as exc:
        print(f"alqa: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
