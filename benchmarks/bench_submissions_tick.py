"""One submissions-sensor tick at real size, against Dagster's 60 s limit on a sensor evaluation.

    .venv/bin/python benchmarks/bench_submissions_tick.py [--entries 50] [--shape 512 512 300]

1. A case whose raw scan and work package (written by ``write_work_package``) are on a
   ``--shape`` grid (0.8 x 0.8 x 1.5 mm), and ``--entries`` inbox entries (default: the
   campaign's ``submissions.max_per_tick``, 50), each a revised uint8 NIfTI label of that
   grid (the package's pseudo label with the liver grown; every file distinct).
2. Baseline, in this process: ``validate_entry`` of single entries (what a tick does per
   entry, reads only), so the per-entry cost and what ``--entries`` of them would take.
3. The tick: ``submissions_sensor`` evaluated against a sqlite Dagster instance, with the
   time bound of ``submissions.max_tick_seconds`` (20 s by default), then the same entries
   again with the bound lifted (what a tick without it takes).
Prints each time and its ratio to the 60 s limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from alqa_core.annotation.intake.inbox import scan_inbox, write_submission
from alqa_core.annotation.queue.packages import package_of, package_pseudo_label
from alqa_core.annotation.intake.validation import validate_entry
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.config.campaign import load_campaign
from alqa_core.config.template import write_template
from alqa_core.io.nifti import read_grid, write_ct, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap
from alqa_core.workspace import WorkspaceLayout

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60.0  # Dagster's default limit on one sensor evaluation
CASE = "case0001"


def _organs(shape: tuple[int, int, int]) -> np.ndarray:
    """A label with every organ of the table as an ellipsoid inside the body (what a pseudo label looks like)."""
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    out = np.zeros(shape, np.uint8)
    for n, value in enumerate(T.values):
        c = np.array(shape) * (0.3 + 0.4 * ((np.array([n, 2 * n, 3 * n]) * 0.37) % 1.0))
        r = np.array(shape) * np.array([0.08, 0.06, 0.10])
        out[((i - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((k - c[2]) / r[2]) ** 2 <= 1] = value
    return out


def workspace(root: Path, shape: tuple[int, int, int], entries: int) -> tuple[Path, WorkspaceLayout]:
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    layout = WorkspaceLayout(root / "ws")
    i, j = np.ogrid[: shape[0], : shape[1]]
    body = (((i - shape[0] / 2) / (shape[0] * 0.45)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.4)) ** 2) <= 1
    hu = np.where(body[..., None], 40, -1000).astype(np.int16) * np.ones(shape[2], np.int16)
    t = time.perf_counter()
    write_ct(layout.raw_scan(CASE), CTVolume(hu.astype(np.float32), affine))
    pseudo = LabelMap(_organs(shape), affine)
    heat = np.zeros((len(T), *shape), np.uint8)
    write_work_package(layout.work_packages(CASE), CASE, 0, CTVolume(hu.astype(np.float32), affine), pseudo, heat, ("liver",), T)
    del hu, heat
    liver = T.value_of("liver")
    grown = np.array(pseudo.array)
    sl = (slice(None), slice(None), slice(shape[2] // 3, 2 * shape[2] // 3))
    region = grown[sl]
    near = np.zeros_like(region, bool)
    near[1:] |= region[:-1] == liver
    region[(region == 0) & near] = liver
    for n in range(entries):
        grown[n % shape[0], 0, 0] = liver if n else 0  # every file distinct (another sha256)
        src = root / "labels" / f"rev{n:03d}.nii.gz"
        write_nifti(src, grown, affine)
        write_submission(layout.inbox, CASE, f"dr_{n:03d}", src)
    print(f"{entries} entries of {shape} uint8 labels and the case's work package written in {time.perf_counter() - t:.0f} s")
    cfg = write_template(root / "campaign.yaml", name="tick", workspace_root=str(layout.root), datasets=(str(root / "datasets"),),
                         architectures=(), spacing_mm=1.5)
    cfg.write_text(cfg.read_text().replace("external_members: []", "external_members:\n  - name: toolA\n    class_map: organ_table"))
    (root / "datasets").mkdir()
    return cfg, layout


def per_entry_seconds(layout: WorkspaceLayout, cfg_path: Path, n: int = 3) -> float:
    cfg = load_campaign(cfg_path)

    def package(case_id, package_id):
        found = package_of(layout, case_id, package_id or None)
        return None if found is None else (found.package_id, package_pseudo_label(found))

    times = []
    for entry in scan_inbox(layout.inbox, None, n, 0.0):
        t = time.perf_counter()
        v = validate_entry(entry, {CASE}, lambda c: read_grid(layout.raw_scan(c)), package, T, cfg.submissions.max_file_mb, cfg.submissions.volume_change_factor)
        times.append(time.perf_counter() - t)
        assert v.accepted, v.reasons
    return statistics.median(times)


def tick(cfg_path: Path, home: Path) -> tuple[float, int, int]:
    """One evaluation of the submissions sensor: (seconds, entries taken, run requests)."""
    import dagster as dg

    from alqa_dagster.defs.automation import submissions_sensor
    from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource

    campaign = CampaignResource(config_path=str(cfg_path))
    workspace = WorkspaceResource(campaign=campaign)
    resources = {"campaign": campaign, "workspace": workspace, "catalog": CatalogResource(workspace=workspace)}
    layout = workspace.layout()
    before = len(scan_inbox(layout.inbox, settle_seconds=0))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        if CASE not in instance.get_dynamic_partitions("cases"):
            instance.add_dynamic_partitions("cases", [CASE])
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            t = time.perf_counter()
            result = submissions_sensor(ctx)
            seconds = time.perf_counter() - t
    return seconds, before - len(scan_inbox(layout.inbox, settle_seconds=0)), len(result.run_requests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=None, help="inbox entries (default: submissions.max_per_tick)")
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="alqa_tick_"))
    shape = tuple(args.shape)
    probe = write_template(root / "probe.yaml", name="probe", datasets=("d",), architectures=(("unet", "tiny"),))
    defaults = load_campaign(probe).submissions
    entries = args.entries or defaults.max_per_tick
    cfg_path, layout = workspace(root, shape, entries)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)

    per_entry = per_entry_seconds(layout, cfg_path)
    print(f"baseline: validate_entry of one {shape} label: {per_entry:.2f} s -> {entries} entries ~ {per_entry * entries:.0f} s "
          f"({per_entry * entries / LIMIT_S:.2f}x the {LIMIT_S:.0f} s limit)")

    print(f"tick with submissions.max_tick_seconds={defaults.max_tick_seconds:g} (max_per_tick={defaults.max_per_tick}):")
    left = entries
    while left:
        seconds, taken, runs = tick(cfg_path, home)
        left -= taken
        print(f"  {seconds:5.1f} s ({seconds / LIMIT_S:.2f}x the limit): took {taken} entries, {runs} run requests; {left} wait for the next tick")
        if not taken:
            raise SystemExit("a tick took nothing")

    # the same entries again, with the time bound lifted: what a tick without it takes
    for src in sorted((root / "labels").iterdir()):
        write_submission(layout.inbox, CASE, f"again_{src.stem}", src)
    unbounded = cfg_path.with_name("unbounded.yaml")
    unbounded.write_text(cfg_path.read_text().replace("max_tick_seconds: 20.0", "max_tick_seconds: 1000000000.0"))
    seconds, taken, runs = tick(unbounded, home)
    print(f"tick without the time bound: {seconds:.1f} s ({seconds / LIMIT_S:.2f}x the limit) for {taken} entries")


if __name__ == "__main__":
    main()
