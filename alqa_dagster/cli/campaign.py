"""``alqa init``, ``demo``, ``ingest``, ``round``, ``reassemble``, ``status``, ``export`` and ``pull-dicomweb``: the operator's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from alqa_dagster.cli.common import Progress, campaign_config, workspace_layout


def cmd_init(args) -> int:
    """Write the template, once every dataset given exists and holds images; offer the prediction folders found there."""
    from alqa_core.config.template import write_template
    from alqa_core.errors import AlqaInputError
    from alqa_core.ingest.dataset import member_json_class_map, survey_datasets, unlisted_by_name

    datasets = [Path(d).expanduser().resolve() for d in args.dataset]
    found = unlisted_by_name(d.unlisted_predictions for d in survey_datasets(datasets))
    offered, notes = [], []
    for name, folders in found.items():
        class_map = "organ_table"  # what a member.json does not say: the user picks when they uncomment it
        try:
            class_map = next((c for c in map(member_json_class_map, folders) if c), class_map)
        except AlqaInputError as exc:
            notes.append(f"  {exc} (offered with class_map: {class_map})")
        offered.append((name, class_map))
    path = write_template(Path(args.path), name=args.name, datasets=tuple(map(str, datasets)) or ("/path/to/Dataset001_Example",),
                          found_members=offered)
    for name, folders in found.items():
        print(f"found predictions/{name}/ in {len(folders)} dataset(s) ({', '.join(f.parent.parent.name for f in folders)}): "
              f"not an ensemble member until external_members names it (offered in {path.name}, commented out)")
    for note in notes:
        print(note)
    print(f"wrote {path}; edit it, then: export ALQA_CAMPAIGN={path.resolve()}")
    return 0


def cmd_demo(args) -> int:
    from alqa_dagster import demo

    return demo.run_demo(
        Path(args.dir), n_cases=args.cases, start_ui=not args.no_ui, port=args.port, progress=Progress(demo.STEPS)
    )


def cmd_ingest(args) -> int:
    from alqa_dagster.headless import ingest

    cfg = campaign_config()
    return ingest(cfg, workspace_layout(), chunk=args.chunk or cfg.batch.cases_per_run)


def cmd_round(args) -> int:
    from alqa_dagster.headless import close, run_round

    if args.action == "close":
        return close(workspace_layout(), args.reason)
    cfg = campaign_config()
    return run_round(workspace_layout(), chunk=args.chunk or cfg.batch.cases_per_run, config=cfg)


def cmd_reassemble(args) -> int:
    from alqa_dagster.headless import reassemble

    return reassemble(workspace_layout(), chunk=args.chunk or campaign_config().batch.cases_per_run)


def cmd_status(args) -> int:
    from alqa_core.annotation.labelled.status import campaign_status

    print(campaign_status(workspace_layout(), campaign_config()).render())
    return 0


def cmd_export(args) -> int:
    from alqa_core.export.nnunet import export_nnunet

    result = export_nnunet(workspace_layout(), Path(args.out), campaign_config(), args.name, partial=args.partial)
    print(result.render())
    return 0


def export_by_format(args) -> int:
    return cmd_export_dicom_seg(args) if args.format == "dicom-seg" else cmd_export(args)


def cmd_export_dicom_seg(args) -> int:
    """One DICOM-SEG per DICOM-sourced case with a reassembled label; --stow pushes them (STOW-RS)."""
    from alqa_core.export.dicom_seg import export_dicom_seg
    from alqa_core.ingest.cases import index_campaign

    layout, config = workspace_layout(), campaign_config()
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


def add_dicom_seg_export_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--format", choices=["nnunet", "dicom-seg"], default="nnunet",
                   help="dicom-seg: one DICOM-SEG per case from a DICOM series (carries the patient's identifiers)")
    s.add_argument("--seg-type", choices=["binary", "labelmap"], default="binary", help="DICOM-SEG segmentation type")
    s.add_argument("--compress", action="store_true", help="DICOM-SEG lossless compression (JPEG 2000 binary, JPEG-LS label map)")
    s.add_argument("--stow", metavar="URL", help="also push the DICOM-SEGs to this DICOMweb root (STOW-RS)")
    s.set_defaults(fn=export_by_format)


def add_commands(sub) -> None:
    """Register this module's commands on ``sub`` (argparse subparsers)."""
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

    s = sub.add_parser("round", help="what the round sensor would do: run the next round (train, predict, attention, reassemble, rank, queue), "
                       "rerun one whose run failed, or say what it waits for; or close the current one")
    s.add_argument("action", nargs="?", choices=["close"], help="close: end the queued round with unanswered cases (they go back to the pool)")
    s.add_argument("--reason", default="closed by hand", help="why the round is closed (recorded in the round-state table)")
    s.add_argument("--chunk", type=int, default=None, help="cases per Dagster run for the per-case steps; default: the campaign's batch.cases_per_run")
    s.set_defaults(fn=cmd_round)

    s = sub.add_parser("reassemble", help="every case's reassembled label (original > revised > pseudo) through the Dagster instance")
    s.add_argument("--chunk", type=int, default=None, help="cases per Dagster run; default: the campaign's batch.cases_per_run")
    s.set_defaults(fn=cmd_reassemble)

    s = sub.add_parser("status", help="rounds and their states, queue, submissions, rejections, refused cases, convergence")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("export", help="write the labelled dataset (every case) in nnU-Net v2 raw layout, with provenance and a dataset card")
    s.add_argument("out", help="an empty or new folder")
    s.add_argument("--name", default="Dataset500_alqa", help="the dataset's name in dataset.json and the card")
    s.add_argument("--partial", action="store_true", help="export the cases that have a reassembled label even if some do not")
    s.set_defaults(fn=cmd_export)
    add_dicom_seg_export_options(s)

    s = sub.add_parser("pull-dicomweb", help="pull CT series from a PACS (QIDO-RS/WADO-RS) into a dataset, one case per series")
    s.add_argument("url", help="the DICOMweb root, e.g. http://pacs:8042/dicom-web (ALQA_DICOMWEB_AUTHORIZATION: an Authorization header)")
    s.add_argument("dataset", help="the dataset folder (nnU-Net v2 raw layout; created when new)")
    s.add_argument("--study", required=True, help="StudyInstanceUID")
    s.add_argument("--series", help="SeriesInstanceUID (default: every CT series of the study)")
    s.add_argument("--case", help="the case id (one series only; default dicom_<hash of the series UID>)")
    s.set_defaults(fn=cmd_pull_dicomweb)
