"""10,000 case partitions: registering them, the new-cases sensor at that size, ranking 100,000 cases, a 10,000-case queue.

    .venv/bin/python benchmarks/bench_partitions.py [--cases 10000] [--batch 1000] [--priority-cases 100000]
                                                    [--storage sqlite postgres] [--queue-cases 10000]

Per Dagster storage (sqlite: the embedded profile's dagster.yaml; postgres: deploy/production's,
on a throwaway server from ``scripts/services.sh start``, which runs with fsync off):

1. ``--cases`` case partitions added in batches of ``--batch`` (what the new-cases sensor's
   requests do): the time of each batch, first and last, and in all.
2. The new-cases sensor at that size, on a campaign whose dataset lists ``--cases`` + 100
   cases (hard links of one phantom case, with two external members' files): a tick that
   finds the 100 new ones, then a tick with nothing new. Target: under 10 s.

Then, without Dagster:

3. ``priority_list``'s core over ``--priority-cases`` cases: the vectorised ranking
   (``rank_frame``) of their ``attention_organ`` rows, against the same rule computed one case
   at a time in Python (what the removed ``rank_cases`` did), in this process. Target: < 1 s.
   And ``priority_for_round`` at ``--queue-cases`` cases through the catalog as the assets
   write it (one Parquet file per case and round), reads included.
4. ``annotation_queue``'s core (``queue_round``) over ``--queue-cases`` cases with the default
   5% budget: a work package per queued case, on tiny synthetic volumes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ORGANS_SEED = 0


def dataset(root: Path, n: int) -> tuple[Path, list[str]]:
    """A nnU-Net dataset of ``n`` cases, every file a hard link of one small phantom case; its campaign file."""
    from alqa_core.config.template import write_template
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign

    src = root / "one"
    write_campaign(src, CampaignSpec(n_cases=5, seed=1, spacing_mm=(8.0, 8.0, 8.0), test_fraction=0.0, hard_fraction=0.0))
    one = src / "datasets" / "Dataset001_PhantomFull"
    image, label = next((one / "imagesTr").iterdir()), next((one / "labelsTr").iterdir())
    ds = root / "datasets" / one.name
    for folder in ("imagesTr", "labelsTr", "predictions/toolA", "predictions/toolB"):
        (ds / folder).mkdir(parents=True)
    shutil.copyfile(one / "dataset.json", ds / "dataset.json")
    cases = [f"Case{i:06d}" for i in range(n)]
    for c in cases:
        os.link(image, ds / "imagesTr" / f"{c}_0000.nii.gz")
        os.link(label, ds / "labelsTr" / f"{c}.nii.gz")
        os.link(label, ds / "predictions" / "toolA" / f"{c}.nii.gz")
        os.link(label, ds / "predictions" / "toolB" / f"{c}.nii.gz")
    cfg = write_template(root / "campaign.yaml", name="partitions", workspace_root=str(root / "ws"), datasets=(str(ds),), architectures=(), spacing_mm=8.0)
    cfg.write_text(cfg.read_text().replace("external_members: []", "external_members:\n  - name: toolA\n    class_map: organ_table\n  - name: toolB\n    class_map: organ_table"))
    return cfg, cases


def _resources(cfg: Path) -> dict:
    from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource

    campaign = CampaignResource(config_path=str(cfg))
    workspace = WorkspaceResource(campaign=campaign)
    return {"campaign": campaign, "workspace": workspace, "catalog": CatalogResource(workspace=workspace)}


def partitions(home: Path, cfg: Path, cases: list[str], n: int, batch: int, label: str) -> None:
    import dagster as dg

    from alqa_dagster.defs.automation import new_cases_sensor

    registered = cases[:n]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        times = []
        for start in range(0, n, batch):
            t = time.perf_counter()
            instance.add_dynamic_partitions("cases", registered[start : start + batch])
            times.append(time.perf_counter() - t)
        assert len(instance.get_dynamic_partitions("cases")) == n
        print(f"{label}: {n} partitions added in batches of {batch}: {sum(times):.1f} s in all; first batch {times[0]:.2f} s, last {times[-1]:.2f} s "
              f"(x{times[-1] / times[0]:.1f})")
        t = time.perf_counter()
        instance.get_dynamic_partitions("cases")
        print(f"{label}: reading the {n} partition keys: {time.perf_counter() - t:.3f} s")
        resources = _resources(cfg)
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            t = time.perf_counter()
            found = new_cases_sensor(ctx)
            first = time.perf_counter() - t
        [add] = found.dynamic_partitions_requests
        print(f"{label}: new-cases sensor tick at {n} partitions, {len(add.partition_keys)} new: {first:.2f} s "
              f"({len(found.run_requests)} run requests of <= batch.cases_per_run); target < 10 s: {'met' if first < 10 else 'MISSED'}")
        instance.add_dynamic_partitions("cases", list(add.partition_keys))
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=found.cursor) as ctx:
            t = time.perf_counter()
            skip = new_cases_sensor(ctx)
            idle = time.perf_counter() - t
        assert isinstance(skip, dg.SkipReason), skip
        print(f"{label}: new-cases sensor tick at {n + len(add.partition_keys)} partitions, nothing new: {idle:.2f} s ({skip.skip_message})")


def sqlite_home(root: Path) -> Path:
    home = root / "sqlite_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


class Postgres:
    """A throwaway PostgreSQL (``scripts/services.sh start``) and a Dagster home using deploy/production's dagster.yaml."""

    def __init__(self, root: Path):
        self.state, self.home = root / "services", root / "pg_home"

    def __enter__(self) -> Path:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start", str(self.state)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"postgres did not start: {done.stdout}{done.stderr}")
        for line in (self.state / "services.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.startswith("DAGSTER_PG_"):
                os.environ[key] = value
        self.home.mkdir()
        shutil.copyfile(ROOT / "deploy" / "production" / "dagster.yaml", self.home / "dagster.yaml")
        return self.home

    def __exit__(self, *exc) -> None:
        subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", str(self.state)], capture_output=True, text=True, check=False)


def attention_rows(case_ids: list[str], seed: int = ORGANS_SEED) -> pd.DataFrame:
    """``attention_organ`` rows of round 0 as the attention step writes them: every organ of the table per case."""
    from alqa_core.organs import DEFAULT_ORGAN_TABLE

    rng = np.random.default_rng(seed)
    organs, n = DEFAULT_ORGAN_TABLE.names, len(case_ids)
    rows = n * len(organs)
    sizes = {m: np.where(rng.random(rows) > 0.6, rng.random(rows), 0.0) for m in ("attention_ml", "weighted_ml", "relative", "ml_per_cm", "relative_per_cm", "abdomenatlas")}
    return pd.DataFrame({
        "case_id": np.repeat(case_ids, len(organs)), "round": 0, "dataset": "Dataset001_Bench", "organ": np.tile(organs, n),
        "scored": rng.random(rows) > 0.2, "attention_voxels": 0, "organ_ml": 100.0, **sizes,
    })


def _per_case_ranking(rows: pd.DataFrame) -> list[str]:
    """The baseline: the ranking rule one case at a time in Python (scored organs' sum, ties by case id)."""
    scores: dict[str, float] = {}
    for r in rows.to_dict(orient="records"):
        scores[r["case_id"]] = scores.get(r["case_id"], 0.0) + (float(r["relative_per_cm"]) if r["scored"] else 0.0)
    return [c for c, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]


def priority(n: int) -> None:
    from alqa_core.annotation.queue.priority import rank_frame

    rows = attention_rows([f"Case{i:06d}" for i in range(n)])
    t = time.perf_counter()
    frame = rank_frame(rows)
    fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = _per_case_ranking(rows)
    slow_s = time.perf_counter() - t
    assert slow == list(frame.case_id), "the two rankings differ"
    print(f"priority over {n} cases ({len(rows)} attention rows): vectorised {fast:.2f} s; one case at a time {slow_s:.1f} s "
          f"(x{slow_s / fast:.0f}); target < 1 s: {'met' if fast < 1 else 'MISSED'}")


def queue(root: Path, n: int) -> None:
    """priority_for_round and queue_round over ``n`` cases written per case into the catalog, as the assets do."""
    from alqa_core.annotation.queue.round_queue import priority_for_round, queue_round
    from alqa_core.catalog import Catalog
    from alqa_core.config.campaign import load_campaign
    from alqa_core.config.template import write_template
    from alqa_core.io.nifti import write_ct, write_label, write_soft_prediction
    from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
    from alqa_core.rounds import transition
    from alqa_core.volume import CTVolume, LabelMap, SoftPrediction
    from alqa_core.workspace import WorkspaceLayout

    layout = WorkspaceLayout(root / "queue_ws")
    catalog = Catalog(layout.catalog)
    cases = [f"Case{i:06d}" for i in range(n)]
    rows = attention_rows(cases)
    t = time.perf_counter()
    for c, part in rows.groupby("case_id", sort=False):
        catalog.write("attention_organ", f"{c}_round_000", part)
        catalog.write("cases", c, pd.DataFrame([{"case_id": c, "dataset": "Dataset001_Bench", "split": "train", "annotated_organs": ""}]))
    print(f"queue: {n} cases' attention rows and case rows written, one Parquet file each, in {time.perf_counter() - t:.0f} s")
    # tiny synthetic volumes (one file each, hard-linked for every case): what a work package is cut from
    shape, affine = (24, 20, 12), np.diag([8.0, 8.0, 8.0, 1.0])
    label = np.zeros(shape, np.uint8)
    label[4:12, 4:12, 2:8] = T.value_of("liver")
    src = root / "volumes"
    write_ct(src / "ct.nii.gz", CTVolume(np.where(label > 0, 60.0, -100.0).astype(np.float32), affine))
    write_label(src / "pseudo.nii.gz", LabelMap(label, affine))
    heat = np.zeros((len(T), *shape), np.uint8)
    heat[T.channel_of("liver"), 4:8, 4:8, 2:4] = 200
    write_soft_prediction(src / "attention.nii.gz", SoftPrediction(heat, affine, T.names, "attention"))
    for c in cases:
        for made, target in (("ct", layout.raw_scan(c)), ("pseudo", layout.pseudo_label(c, 0)), ("attention", layout.attention_map(c, 0))):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(src / f"{made}.nii.gz", target)
    cfg = load_campaign(write_template(root / "queue.yaml", name="queue", workspace_root=str(layout.root), datasets=("d",), architectures=(("unet", "tiny"),)))
    # round 0 opened and trained through the state machine, as a round run leaves it before ranking
    transition(catalog, 0, "opened", "bench", training_cases=0, training_set_sha256="", cases_refused=0)
    transition(catalog, 0, "trained", "bench", members_trained=0)
    t = time.perf_counter()
    ranked = priority_for_round(catalog, 0)
    ranked_s = time.perf_counter() - t
    print(f"priority_for_round over {n} cases through the catalog ({n} attention files read, ranked, written): {ranked_s:.2f} s")
    t = time.perf_counter()
    done = queue_round(layout, catalog, cfg, 0)
    queue_s = time.perf_counter() - t
    assert len(done.packages) == done.queue.budget == int(np.ceil(0.05 * n)) and tuple(done.frame.case_id) == tuple(ranked.case_id[ranked.score > 0][: done.queue.budget])
    print(f"queue_round over {n} cases, budget {done.queue.budget} (5%): {queue_s:.1f} s, {len(done.packages)} work packages "
          f"({queue_s / len(done.packages) * 1000:.0f} ms per queued case)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--priority-cases", type=int, default=100_000)
    ap.add_argument("--queue-cases", type=int, default=10_000)
    ap.add_argument("--storage", nargs="*", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="alqa_partitions_"))
    t = time.perf_counter()
    cfg, cases = dataset(root / "campaign", args.cases + 100)
    print(f"a dataset of {len(cases)} cases (hard links) in {time.perf_counter() - t:.0f} s ({root})")
    for storage in args.storage:
        if storage == "sqlite":
            partitions(sqlite_home(root), cfg, cases, args.cases, args.batch, "sqlite")
        else:
            with Postgres(root) as home:
                partitions(home, cfg, cases, args.cases, args.batch, "postgres (fsync off)")
    priority(args.priority_cases)
    queue(root, args.queue_cases)


if __name__ == "__main__":
    main()
