"""``alqa submit``, ``confirm``, ``grade``, ``annotators`` and ``serve``: what annotators and graders hand in, and their server."""

from __future__ import annotations

import time
from pathlib import Path

from alqa_core.errors import AlqaInputError
from alqa_dagster.cli.common import campaign_config, parse_slices, workspace_layout


def cmd_submit(args) -> int:
    from alqa_core.annotation.intake.inbox import write_submission

    from alqa_core.annotation.queue.packages import package_of

    layout = workspace_layout()
    slices = parse_slices(args.slices)
    answered = package_of(layout, args.case, args.package)
    package = answered.package_id if answered is not None else ""
    entry = write_submission(
        layout.inbox, args.case, args.annotator, Path(args.label), "revised", tuple(args.emptied or ()), args.note or "",
        annotated_slices=slices, package=package,
    )
    scope = f"slices {','.join(map(str, slices))} only" if slices else "whole volume"
    answers = f", answering work package {package}" if package else ""
    print(f"submitted {args.case} ({scope}{answers}) as inbox entry {entry.name}; the submissions sensor validates it on its next tick")
    return wait_for_verdict(layout, entry.name, args.wait) if args.wait else 0


def wait_for_verdict(layout, entry_name: str, seconds: float) -> int:
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


def cmd_confirm(args) -> int:
    from alqa_core.annotation.intake.inbox import write_submission

    from alqa_core.annotation.queue.packages import package_of

    layout = workspace_layout()
    package = package_of(layout, args.case, args.package, required=True).package_id
    entry = write_submission(layout.inbox, args.case, args.annotator, None, "confirmed", note=args.note or "", package=package)
    print(f"confirmed {args.case}: the pseudo label of work package {package} needs no revision (inbox entry {entry.name})")
    return wait_for_verdict(layout, entry.name, args.wait) if args.wait else 0


def cmd_grade(args) -> int:
    from alqa_core.catalog import Catalog
    from alqa_core.qa.grades import QAGrade, import_grades_csv, record_grade
    from alqa_core.rounds import current_round

    layout = workspace_layout()
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
    settings = ServeSettings(workspace_layout(), campaign_config(), auth=not args.no_auth, local_annotator=local, token_hours=args.token_hours)
    run(settings, args.host, args.port, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0


def cmd_annotators(args) -> int:
    from alqa_core.annotation.intake.annotators import add_annotator, list_annotators, revoke_annotator

    folder = workspace_layout().annotators
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


def add_commands(sub) -> None:
    """Register this module's commands on ``sub`` (argparse subparsers)."""
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

    s = sub.add_parser("grade", help="record a QA grade: 0 success, 1 usable, 2 failure (or import a CSV)")
    s.add_argument("case", nargs="?", help="the case id")
    s.add_argument("grade", nargs="?", choices=["0", "1", "2"], help="0 success, 1 usable, 2 failure")
    s.add_argument("--grader", required=True, help="your name, as recorded with the grade")
    s.add_argument("--round", type=int, help="the round graded (default: the current one)")
    s.add_argument("--note", help="a free-text note kept with the grade")
    s.add_argument("--csv", help="import grades from a CSV: columns case_id,grade[,round,grader,graded_at,note]")
    s.set_defaults(fn=cmd_grade)
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
