"""Shared pieces of the reliability suite: tiny real datasets, a campaign config, figures.

Every test records what it tried with pytest's ``record_property`` under the
names ``benchmarks/reliability_table.py`` sums into the figure table:
``bad_inputs_tried``/``bad_inputs_rejected``, ``crashes_injected``/
``crashes_recovered``, ``submissions_sent``/``submissions_processed_once``,
``rows_written``/``rows_lost`` and ``inbox_scan_s``. A "success" figure is
recorded only after the test has checked it, so a failing check leaves the
"tried" figure without its match in the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from alqa_core.config.template import write_template
from alqa_core.io.nifti import write_ct, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap

REPO = Path(__file__).resolve().parents[2]
DAGSTER_CLI = str(Path(sys.executable).with_name("dagster"))

#: The tiny case every dataset here uses: 24 x 20 x 12 voxels of 3 x 3 x 4 mm.
SHAPE = (24, 20, 12)
AFFINE = np.array([[3.0, 0, 0, -36.0], [0, 3.0, 0, -30.0], [0, 0, 4.0, -24.0], [0, 0, 0, 1.0]])
#: A second grid (another scan): same shape, shifted 40 mm.
OTHER_AFFINE = AFFINE + np.array([[0, 0, 0, 40.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def phantom_ct(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """A body (soft tissue in air) with a bright blob: enough to preprocess and crop."""
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000.0, np.float32)
    hu[3:-3, 3:-3, :] = 40.0
    hu[6:12, 6:12, 2:8] = 120.0
    return hu + rng.normal(0, 5, shape).astype(np.float32)


def phantom_label(shape=SHAPE) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[6:12, 6:12, 2:8] = T.value_of("liver")
    lab[14:18, 8:12, 3:7] = T.value_of("spleen")
    return lab


def make_dataset(root: Path, cases=("c1", "c2"), labelled=("c1",)) -> Path:
    """An nnU-Net v2 raw dataset of tiny phantoms; labels annotate liver and spleen."""
    (root / "imagesTr").mkdir(parents=True)
    meta = {"labels": {"background": 0, "spleen": 1, "liver": 5}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    for i, c in enumerate(cases):
        write_ct(root / "imagesTr" / f"{c}_0000.nii.gz", CTVolume(phantom_ct(i), AFFINE if i % 2 == 0 else OTHER_AFFINE))
        if c in labelled:
            write_label(root / "labelsTr" / f"{c}.nii.gz", LabelMap(phantom_label(), AFFINE if i % 2 == 0 else OTHER_AFFINE))
    return root


def make_config(tmp_path: Path, datasets, name: str = "campaign.yaml", **kw) -> Path:
    """A campaign YAML (the template ``alqa init`` writes) with a tiny U-Net and 6 mm spacing."""
    return write_template(
        tmp_path / name,
        name="reliability",
        workspace_root=str(tmp_path / "ws"),
        datasets=tuple(str(d) for d in datasets),
        architectures=(("unet", "tiny"),),
        spacing_mm=6.0,
        patch_vox=16,
        roi_vox=16,
        max_epochs=1,
        iterations_per_epoch=1,
        qa_epochs=1,
        **kw,
    )


def set_yaml_key(config_path: Path, section: str, key: str, value) -> None:
    """Add/replace ``section.key`` in a template config (keeps the file a user would edit)."""
    import yaml

    raw = yaml.safe_load(config_path.read_text())
    raw.setdefault(section, {})[key] = value
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (what "nothing modified" compares)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def dagster_env(tmp_path: Path, config_path: Path) -> dict[str, str]:
    """Environment for a ``dagster`` CLI subprocess: its own sqlite instance, this campaign."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    return {**env, "DAGSTER_HOME": str(home), "ALQA_CAMPAIGN": str(config_path), "PYTHONUNBUFFERED": "1"}


@dataclass
class Figures:
    """Accumulate this test's figures; they are written with ``record_property`` at teardown."""

    values: dict

    def add(self, name: str, n: float = 1) -> None:
        if name not in FIGURE_NAMES:
            raise KeyError(f"unknown figure {name!r}; known {FIGURE_NAMES}")
        self.values[name] = self.values.get(name, 0) + n


FIGURE_NAMES = (
    "bad_inputs_tried",
    "bad_inputs_rejected",
    "crashes_injected",
    "crashes_recovered",
    "submissions_sent",
    "submissions_processed_once",
    "rows_written",
    "rows_lost",
    "inbox_scan_s",
)


@pytest.fixture
def figures(record_property):
    """``figures.add(name, n)`` during the test; every name is recorded (0 when never added)."""
    f = Figures({})
    yield f
    for name in FIGURE_NAMES:
        if name in f.values:
            record_property(name, f.values[name])


def sensor_resources(config_path: Path) -> dict:
    """The resources the code location binds, on this campaign (for ``dg.build_sensor_context``)."""
    from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource

    campaign = CampaignResource(config_path=str(config_path))
    workspace = WorkspaceResource(campaign=campaign)
    return {"campaign": campaign, "workspace": workspace, "catalog": CatalogResource(workspace=workspace)}


def ingest_raw_scans(config_path: Path) -> list[str]:
    """What the raw_scans asset does for every case (the submissions check against these grids)."""
    from alqa_core.config.campaign import load_campaign
    from alqa_core.ingest.cases import index_campaign, ingest_scan
    from alqa_core.workspace import WorkspaceLayout

    cfg = load_campaign(config_path)
    layout = WorkspaceLayout(cfg.workspace_root)
    index = index_campaign(cfg)
    for case_id, case in index.cases.items():
        ingest_scan(case, layout.raw_scan(case_id))
    return sorted(index.cases)


def queue_packages(config_path: Path, case_ids) -> dict[str, str]:
    """A work package per case, as a round's queue writes them (what a confirmation confirms); case -> package id."""
    from alqa_core.annotation.queue.work_package import write_work_package
    from alqa_core.config.campaign import load_campaign
    from alqa_core.io.nifti import read_ct
    from alqa_core.workspace import WorkspaceLayout

    layout = WorkspaceLayout(load_campaign(config_path).workspace_root)
    out = {}
    for case_id in case_ids:
        ct = read_ct(layout.raw_scan(case_id))
        pseudo = LabelMap(phantom_label(ct.shape), ct.affine)
        attention = np.zeros((len(T), *ct.shape), np.uint8)
        out[case_id] = write_work_package(layout.work_packages(case_id), case_id, 0, ct, pseudo, attention, ("liver",), T).package_id
    return out


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    """(config path, dagster home, resources) with raw scans of c1 and c2 in the workspace."""
    root = make_dataset(tmp_path / "Dataset001_Tiny", cases=("c1", "c2"), labelled=("c1",))
    cfg = make_config(tmp_path, [root])
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg))  # the code location's resources read it when a run is created
    ingest_raw_scans(cfg)
    queue_packages(cfg, ("c1", "c2"))  # queued: a confirmation confirms its package's pseudo label
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("cases", ["c1", "c2"])
    return cfg, home, sensor_resources(cfg)
