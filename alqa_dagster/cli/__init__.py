"""The ``alqa`` command line: init, demo, ingest, round, reassemble, submit, confirm, status, grade, export, pull-dicomweb, simulate,
serve, annotators.

Every command is a thin shell over alqa_core and the Dagster definitions, one module per group:

- :mod:`.common`: the campaign and workspace a command works on, the progress display, slice lists;
- :mod:`.campaign`: the operator's commands (init, demo, ingest, round, reassemble, status, export, pull-dicomweb);
- :mod:`.annotators`: what annotators and graders hand in, and their server (submit, confirm, grade, annotators, serve);
- :mod:`.simulate`: the campaign simulators.
"""

from __future__ import annotations

import argparse
import sys

from alqa_core.errors import AlqaInputError
from alqa_dagster.cli import annotators, campaign, simulate
from alqa_dagster.cli.common import parse_slices  # noqa: F401 (part of the face: tests parse slice lists)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alqa", description="Active-learning annotation of 3D CT organ segmentation, on Dagster. "
                                "Commands that need a campaign read ALQA_CAMPAIGN (the YAML alqa init writes) and, optionally, ALQA_WORKSPACE.")
    sub = p.add_subparsers(dest="command", required=True)

    campaign.add_commands(sub)
    annotators.add_commands(sub)
    simulate.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed, for reports
    try:
        return args.fn(args)
    except (AlqaInputError, ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"alqa: error: {exc}", file=sys.stderr)
        return 2

