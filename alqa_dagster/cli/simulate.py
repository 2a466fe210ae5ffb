"""``alqa simulate``: compare selection strategies where the ground truth is known (trained members, or error-model members)."""

from __future__ import annotations

import shlex
from pathlib import Path

from alqa_core.errors import AlqaInputError
from alqa_dagster.cli.common import Progress, parse_slices


def cmd_simulate(args) -> int:
    from alqa_core.catalog import Catalog
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
    from alqa_core.simulator.trained.run import run_simulation, simulation_config
    from alqa_core.workspace import validate_case_id

    validate_case_id(args.name)  # the catalog partition: check it before hours of simulation
    if args.members == "error-model":
        return simulate_error_model(args)
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


def simulate_error_model(args) -> int:
    """``alqa simulate --members error-model``: error-model ensembles, no training (alqa_core.simulator.error_model.evidence)."""
    from alqa_core.catalog import Catalog
    from alqa_core.simulator.error_model.run import evidence_config, run_evidence_simulation

    strategies = [s.strip() for s in (args.strategies or "attention,outliers,uss,fg_random").split(",") if s.strip()]
    config = evidence_config(
        n_cases=args.cases, seeds=parse_slices(args.seeds), rounds=args.rounds, strategies=strategies, budget_per_round=args.budget,
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


def add_commands(sub) -> None:
    """Register this module's commands on ``sub`` (argparse subparsers)."""
    s = sub.add_parser("simulate", help="compare selection strategies at equal effort on a phantom campaign (oracle annotator)")
    s.add_argument("campaign", nargs="?", help="a phantom campaign root (with ground_truth/manifest.csv); not needed with --members error-model")
    s.add_argument("--out", required=True, help="folder for the simulator's workspace, report and catalog")
    s.add_argument("--phantoms", type=int, default=0, help="first write a new phantom campaign of N cases at CAMPAIGN")
    s.add_argument("--phantom-spacing-mm", type=float, help="phantom spacing (default 5 for --phantoms, 4 for error-model cases)")
    s.add_argument("--strategies", help="comma-separated: attention, outliers, uss, rss, uvs, rvs, fg_random "
                   "(default attention,uss,outliers,fg_random; error-model: attention,outliers,uss,fg_random)")
    s.add_argument("--rounds", type=int, default=3, help="rounds after M_0")
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
    s.add_argument("--finetune-epochs", type=int, default=4, help="epochs of each round's fine-tuning")
    s.add_argument("--iterations", type=int, default=12, help="iterations per epoch")
    s.add_argument("--patch", type=int, default=32, help="cubic patch edge in voxels")
    s.add_argument("--lr", type=float, help="default 1e-3 from scratch, 1e-4 fine-tuning")
    s.add_argument("--spacing-mm", type=float, help="preprocessing spacing (default: the campaign's)")
    s.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the splits and the networks")
    s.add_argument("--threads", type=int, help="torch threads")
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    s.add_argument("--name", default="simulation", help="the catalog partition of the result rows")
    s.set_defaults(fn=cmd_simulate)
