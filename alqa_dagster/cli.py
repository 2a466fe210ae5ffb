"""The ``alqa`` command line: init, demo, ingest, round, reassemble, submit, confirm, status, grade, export, pull-dicomweb, simulate,
serve, annotators.

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
    from alqa_core.annotation.intake.inbox import write_submission

    layout = _layout()
    slices = _parse_slices(args.slices)
    package = _package(layout, args.case, args.package, required=False)
    entry = write_submission(
        layout.inbox, args.case, args.annotator, Path(args.label), "revised", tuple(args.emptied or ()), args.note or "",
        annotated_slices=slices, package=package,
    )
    scope = f"slices {','.join(map(str, slices))} only" if slices else "whole volume"
    answers = f", answering work package {package}" if package else ""
    print(f"submitted {args.case} ({scope}{answers}) as inbox entry {entry.name}; the submissions sensor validates it on its next tick")
    return _wait(layout, entry.name, args.wait) if args.wait else 0


def _package(layout, case_id: str, package_id: str | None, required: bool) -> str:
    """The package a submission answers: the one named, else the case's newest ("" if it was never queued)."""
    from alqa_core.annotation.queue.packages import find_package, newest_package

    if package_id:
        return find_package(layout, case_id, package_id).package_id
    newest = newest_package(layout, case_id)
    if newest is None and required:
        raise AlqaInputError(layout.work_packages(case_id), f"case {case_id} has no work package: only a queued case can be confirmed")
    return "" if newest is None else newest.package_id


def _wait(layout, entry_name: str, seconds: float) -> int:
    """Poll the catalog until the submissions sensor recorded a verdict on the entry; print it."""
    from alqa_core.annotation.intake.process import verdict_of

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = verdict_of(layout, entry_name)
        if row is not None:
            print(f"{row['status']}: {row['case_id']} (submission {row['submission_id']})" + (f"\n{row['reasons']}" if row["reasons"] else ""))
            if row.get("flags"):
                print(f"flags: {row['flags']}")
            return 1 if row["status"] == "rejected" else 0
        time.sleep(1.0)
    raise AlqaInputError(layout.inbox / entry_name, f"no verdict after {seconds:g} s: is the submissions_sensor running (dagster dev / dagster-daemon)?")


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
    from alqa_core.annotation.intake.inbox import write_submission

    layout = _layout()
    package = _package(layout, args.case, args.package, required=True)
    entry = write_submission(layout.inbox, args.case, args.annotator, None, "confirmed", note=args.note or "", package=package)
    print(f"confirmed {args.case}: the pseudo label of work package {package} needs no revision (inbox entry {entry.name})")
    return _wait(layout, entry.name, args.wait) if args.wait else 0


def cmd_status(args) -> int:
    from alqa_core.annotation.labelled.status import campaign_status

    print(campaign_status(_layout()).render())
    return 0


def cmd_grade(args) -> int:
    from alqa_core.catalog import Catalog
    from alqa_core.qa.grades import QAGrade, import_grades_csv, record_grade
    from alqa_core.rounds import current_round

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
    from alqa_core.export.nnunet import export_nnunet

    result = export_nnunet(_layout(), Path(args.out), _config(), args.name, partial=args.partial)
    print(result.render())
    return 0


def cmd_ingest(args) -> int:
    from alqa_dagster.headless import ingest

    cfg = _config()
    return ingest(cfg, _layout(), chunk=args.chunk or cfg.batch.cases_per_run)


def cmd_round(args) -> int:
    from alqa_dagster.headless import close, run_round

    if args.action == "close":
        return close(_layout(), args.reason)
    return run_round(_layout(), chunk=args.chunk or _config().batch.cases_per_run)


def cmd_reassemble(args) -> int:
    from alqa_dagster.headless import reassemble

    return reassemble(_layout(), chunk=args.chunk or _config().batch.cases_per_run)


def export_by_format(args) -> int:
    return cmd_export_dicom_seg(args) if args.format == "dicom-seg" else cmd_export(args)


def cmd_export_dicom_seg(args) -> int:
    """One DICOM-SEG per DICOM-sourced case with a reassembled label; --stow pushes them (STOW-RS)."""
    from alqa_core.export.dicom_seg import export_dicom_seg
    from alqa_core.ingest.cases import index_campaign

    layout, config = _layout(), _config()
    result = export_dicom_seg(layout, Path(args.out), index_campaign(config).cases.values(), config.organ_table,
                              args.seg_type.upper(), compress=args.compress)
    for case in result.written:
        print(f"{case.case_id}: {case.path.name} {case.segmentation_type} {len(case.segments)} segment(s), {case.n_frames} frames, "
              f"{case.size_bytes / 1024:.0f} KiB")
        for s in case.segments:
            side = f" ({s.laterality})" if s.laterality else ""
            print(f"    {s.number:>2} {s.organ:<20} SCT {s.code} {s.meaning}{side}  {s.algorithm_type} ({s.source})")
    for case_id, reason in result.skipped:
        print(f"{case_id}: no DICOM-SEG: {reason}")
    print(f"exported {len(result.written)} DICOM-SEG(s) to {result.root}; they carry the source's patient and study identifiers")
    if args.stow:
        from alqa_core.export.stow import stow_files

        stowed = stow_files(args.stow, [c.path for c in result.written])
        print(f"stored {len(stowed.stored)} DICOM-SEG(s) in {args.stow} (STOW-RS)")
    return 0


def cmd_pull_dicomweb(args) -> int:
    from alqa_core.ingest.dicomweb import pull_dicomweb

    result = pull_dicomweb(args.url, args.study, Path(args.dataset), series_uid=args.series, case_id=args.case)
    for case in result.cases:
        print(f"{case.case_id}: {case.n_instances} instances, grid {case.shape} -> {case.folder}")
    print(f"pulled {len(result.cases)} series into {result.dataset}; add it to the campaign's datasets")
    return 0


def cmd_simulate(args) -> int:
    from alqa_core.catalog import Catalog
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
    from alqa_core.simulator.trained.run import run_simulation, simulation_config
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
    """``alqa simulate --members error-model``: error-model ensembles, no training (alqa_core.simulator.error_model.evidence)."""
    from alqa_core.catalog import Catalog
    from alqa_core.simulator.error_model.run import evidence_config, run_evidence_simulation

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


def cmd_serve(args) -> int:
    """The annotators' front door: MONAI Label's API for 3D Slicer and the web worklist (alqa_dagster/serve)."""
    import getpass

    from alqa_dagster.serve.app import check_bind, run
    from alqa_dagster.serve.state import ServeSettings

    check_bind(args.host, not args.no_auth)  # before anything is loaded
    local = (args.annotator or getpass.getuser()) if args.no_auth else ""
    if local:
        from alqa_core.annotation.intake.annotators import validate_annotator

        validate_annotator(local)
    settings = ServeSettings(_layout(), _config(), auth=not args.no_auth, local_annotator=local, token_hours=args.token_hours)
    run(settings, args.host, args.port, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0


def cmd_annotators(args) -> int:
    from alqa_core.annotation.intake.annotators import add_annotator, list_annotators, revoke_annotator

    folder = _layout().annotators
    if args.action in ("add", "revoke") and not args.name:
        raise AlqaInputError(None, f"alqa annotators {args.action} NAME: give the annotator's name")
    if args.action == "add":
        found, secret = add_annotator(folder, args.name)
        print(f"annotator {found.name}: token (shown once, only its hash is kept):\n{secret}")
        print("3D Slicer's MONAI Label module: server http://HOST:8000, user name and this token as password; or the web worklist at /worklist/")
    elif args.action == "revoke":
        found = revoke_annotator(folder, args.name)
        print(f"revoked {found.name}'s token ({found.credential_id}); their sessions end now")
    else:
        for a in list_annotators(folder):
            print(f"{a.name:<24} {a.credential_id}  created {a.created_at}  " + (f"revoked {a.revoked_at}" if a.revoked_at else "active"))
    return 0


def _config():
    from alqa_core.config.campaign import load_campaign

    path = os.environ.get("ALQA_CAMPAIGN")
    if not path:
        raise AlqaInputError(None, "set ALQA_CAMPAIGN to the campaign YAML (alqa init writes one)")
    return load_campaign(path)


def _layout():
    from alqa_core.workspace import WorkspaceLayout

    cfg = _config()
    root = Path(os.environ["ALQA_WORKSPACE"]) if os.environ.get("ALQA_WORKSPACE") else cfg.workspace_root
    return WorkspaceLayout(root.resolve())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alqa", description="Active-learning annotation of 3D CT organ segmentation, on Dagster. "
                                "Commands that need a campaign read ALQA_CAMPAIGN (the YAML alqa init writes) and, optionally, ALQA_WORKSPACE.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="write a commented campaign config template")
    s.add_argument("path", nargs="?", default="alqa_campaign.yaml", help="where to write it (never overwritten)")
    s.add_argument("--name", default="my_campaign", help="the campaign's name")
    s.add_argument("--dataset", action="append", default=[], help="a dataset root in nnU-Net v2 raw layout (repeatable)")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("demo", help="phantom campaign -> one round up to the annotation queue -> Dagster UI")
    s.add_argument("--dir", default="demo", help="folder for the demo's campaign, workspace and Dagster home")
    s.add_argument("--cases", type=int, default=24, help="phantom cases to generate")
    s.add_argument("--no-ui", action="store_true", help="stop after the round instead of starting dagster dev")
    s.add_argument("--port", type=int, default=3000, help="the Dagster UI's port on 127.0.0.1")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("ingest", help="register new cases as partitions and ingest them (and fixed ones) through the Dagster instance")
    s.add_argument("--chunk", type=int, default=None, help="cases per Dagster run (memory is bounded by one chunk); default: the campaign's batch.cases_per_run")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("round", help="run the next round (train, predict, attention, reassemble, rank, queue), or close the current one")
    s.add_argument("action", nargs="?", choices=["close"], help="close: end the queued round with unanswered cases (they go back to the pool)")
    s.add_argument("--reason", default="closed by hand", help="why the round is closed (recorded in the round-state table)")
    s.add_argument("--chunk", type=int, default=None, help="cases per Dagster run for the per-case steps; default: the campaign's batch.cases_per_run")
    s.set_defaults(fn=cmd_round)

    s = sub.add_parser("reassemble", help="every case's reassembled label (original > revised > pseudo) through the Dagster instance")
    s.add_argument("--chunk", type=int, default=None, help="cases per Dagster run; default: the campaign's batch.cases_per_run")
    s.set_defaults(fn=cmd_reassemble)

    s = sub.add_parser("submit", help="hand in a revised label for a case (NIfTI, or the .seg.nrrd of its work package)")
    s.add_argument("case", help="the case id")
    s.add_argument("--label", required=True, help="the revised label: .nii.gz/.nii with organ-table values, or a 3D Slicer .seg.nrrd (segments named as organs)")
    s.add_argument("--annotator", required=True, help="your name, as recorded with the revision")
    s.add_argument("--package", help="the work package version answered (task.json's package_id; default: the case's newest)")
    s.add_argument("--emptied", action="append", help="an organ deliberately emptied (repeatable)")
    s.add_argument("--slices", help="a slice-level revision: only these slices (e.g. 12,17,30-32; third voxel axis) were revised")
    s.add_argument("--note", help="a free-text note kept with the submission")
    s.add_argument("--wait", type=float, nargs="?", const=300.0, help="wait (default 300 s) for the submissions sensor's verdict and print it")
    s.set_defaults(fn=cmd_submit)

    s = sub.add_parser("confirm", help="confirm that the pseudo label of a case's work package needs no revision")
    s.add_argument("case", help="the case id")
    s.add_argument("--annotator", required=True, help="your name, as recorded with the confirmation")
    s.add_argument("--package", help="the work package version confirmed (default: the case's newest)")
    s.add_argument("--note", help="a free-text note kept with the confirmation")
    s.add_argument("--wait", type=float, nargs="?", const=300.0, help="wait (default 300 s) for the submissions sensor's verdict and print it")
    s.set_defaults(fn=cmd_confirm)

    s = sub.add_parser("status", help="rounds and their states, queue, submissions, rejections, refused cases, convergence")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("grade", help="record a QA grade: 0 success, 1 usable, 2 failure (or import a CSV)")
    s.add_argument("case", nargs="?", help="the case id")
    s.add_argument("grade", nargs="?", choices=["0", "1", "2"], help="0 success, 1 usable, 2 failure")
    s.add_argument("--grader", required=True, help="your name, as recorded with the grade")
    s.add_argument("--round", type=int, help="the round graded (default: the current one)")
    s.add_argument("--note", help="a free-text note kept with the grade")
    s.add_argument("--csv", help="import grades from a CSV: columns case_id,grade[,round,grader,graded_at,note]")
    s.set_defaults(fn=cmd_grade)
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

    s = sub.add_parser("export", help="write the labelled dataset (every case) in nnU-Net v2 raw layout, with provenance and a dataset card")
    s.add_argument("out", help="an empty or new folder")
    s.add_argument("--name", default="Dataset500_alqa", help="the dataset's name in dataset.json and the card")
    s.add_argument("--partial", action="store_true", help="export the cases that have a reassembled label even if some do not")
    s.set_defaults(fn=cmd_export)
    add_dicom_seg_export_options(s)

    s = sub.add_parser("serve", help="the annotators' server: MONAI Label's API (3D Slicer's Next sample / Submit label) and a web worklist")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 for the network, with tokens)")
    s.add_argument("--port", type=int, default=8000, help="port (MONAI Label's default 8000)")
    s.add_argument("--no-auth", action="store_true", help="no login (loopback only): every write is attributed to --annotator")
    s.add_argument("--annotator", help="with --no-auth: the local annotator's name (default: your user name)")
    s.add_argument("--token-hours", type=float, default=12.0, help="lifetime of a login's access token (Slicer logs in again by itself)")
    s.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM); with --ssl-keyfile")
    s.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("annotators", help="per-annotator tokens for alqa serve: add NAME (prints the token once), revoke NAME, list")
    s.add_argument("action", choices=["add", "revoke", "list"], help="add a new annotator (prints the token once), revoke one, or list them")
    s.add_argument("name", nargs="?", help="the annotator's name ([A-Za-z0-9_-], as recorded with their submissions)")
    s.set_defaults(fn=cmd_annotators)

    s = sub.add_parser("pull-dicomweb", help="pull CT series from a PACS (QIDO-RS/WADO-RS) into a dataset, one case per series")
    s.add_argument("url", help="the DICOMweb root, e.g. http://pacs:8042/dicom-web (ALQA_DICOMWEB_AUTHORIZATION: an Authorization header)")
    s.add_argument("dataset", help="the dataset folder (nnU-Net v2 raw layout; created when new)")
    s.add_argument("--study", required=True, help="StudyInstanceUID")
    s.add_argument("--series", help="SeriesInstanceUID (default: every CT series of the study)")
    s.add_argument("--case", help="the case id (one series only; default dicom_<hash of the series UID>)")
    s.set_defaults(fn=cmd_pull_dicomweb)
    return p


def add_dicom_seg_export_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--format", choices=["nnunet", "dicom-seg"], default="nnunet",
                   help="dicom-seg: one DICOM-SEG per case from a DICOM series (carries the patient's identifiers)")
    s.add_argument("--seg-type", choices=["binary", "labelmap"], default="binary", help="DICOM-SEG segmentation type")
    s.add_argument("--compress", action="store_true", help="DICOM-SEG lossless compression (JPEG 2000 binary, JPEG-LS label map)")
    s.add_argument("--stow", metavar="URL", help="also push the DICOM-SEGs to this DICOMweb root (STOW-RS)")
    s.set_defaults(fn=export_by_format)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed, for reports
    try:
        return args.fn(args)
    except (AlqaInputError, ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"alqa: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
