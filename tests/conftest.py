"""Shared test configuration.

Slow tests (training to a Dice target, full rounds) are marked ``slow``. The
quick developer loop (plain ``pytest``) skips them; the README's test command
(``scripts/test.sh``) passes ``--run-slow`` so CI runs everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("ALQA_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (the README's test command does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """The real abdominal CT of ../shared/data/real-ct-dicom (DICOM series + TotalSegmentator labels)."""
    path = SHARED_DATA / "real-ct-dicom"
    if not (path / "series").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path}: the shared real CT is missing; CI must have ../shared beside the clone")
        pytest.skip(f"{path} not present (clone this repo beside the project's shared/ folder)")
    return path


def _fill_series_uids(folder: Path) -> Path:
    """Write the UIDs the shared real series leaves EMPTY (SOP class/instance from the file meta,
    study and series derived from its FrameOfReferenceUID, so every test sees the same ones)."""
    import pydicom
    from pydicom.uid import generate_uid

    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["alqa-test", "study", ds.FrameOfReferenceUID])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["alqa-test", "series", ds.FrameOfReferenceUID])
        ds.save_as(path)
    return Path(folder)


@pytest.fixture(scope="session")
def fill_series_uids():
    """``fill(folder)``: write study/series/SOP UIDs into a COPY of the real series (a PACS and a DICOM-SEG need them)."""
    return _fill_series_uids



def walk_round(catalog, round_index: int, state: str, reason: str = "", **facts):
    """Take round ``round_index`` to ``state`` through the round state machine's legal transitions (earlier rounds
    closed first), with zeros for the facts each transition records (``facts`` for the last one); returns the record."""
    from alqa_core.rounds import FINISHED, TRANSITIONS, latest_round, transition

    order = ("opened", "trained", "predicted", "queued")

    def step(t, target, why="", given=None):
        return transition(catalog, t, target, why, **{**{f: 0 for f in TRANSITIONS[target].records}, **(given or {})})

    def take(t, target, why="", given=None):
        rec = latest_round(catalog)
        at = rec.state if rec is not None and rec.round_index == t else None
        start = order.index(at) + 1 if at in order else 0
        stop = order.index(target) + 1 if target in order else len(order)
        for s in order[start:stop]:
            rec = step(t, s, why, given) if s == target else step(t, s)
        return rec if target in order else step(t, target, why, given)

    rec = latest_round(catalog)
    for t in range(0 if rec is None else rec.round_index, round_index):  # earlier rounds end closed
        rec = latest_round(catalog)
        if rec is None or rec.round_index < t or rec.state not in (*FINISHED, "converged"):
            take(t, "closed")
    return take(round_index, state, reason, facts)

