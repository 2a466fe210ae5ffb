"""A small phantom campaign, its config, and the Dagster resources bound to it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from alqa_core.config.template import write_template
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_dagster.resources import (
    CampaignResource,
    CatalogResource,
    DeviceResource,
    VolumePathIOManager,
    WorkspaceResource,
)


@pytest.fixture(scope="session")
def phantom_campaign(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_campaign(root / "campaign", CampaignSpec(n_cases=5, seed=7, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.2, test_fraction=0.0))
    return root / "campaign"


def campaign_yaml(tmp_path: Path, campaign: Path, architectures=(("unet", "tiny"),), datasets=None, **kw) -> Path:
    datasets = datasets or tuple(str(p) for p in sorted((campaign / "datasets").iterdir()))
    return write_template(
        tmp_path / "campaign.yaml",
        name="test",
        workspace_root=str(tmp_path / "ws"),
        datasets=datasets,
        architectures=architectures,
        spacing_mm=6.0,
        patch_vox=32,
        roi_vox=32,
        max_epochs=2,
        iterations_per_epoch=2,
        qa_epochs=3,
        **kw,
    )


def make_resources(config_path: Path) -> dict:
    campaign = CampaignResource(config_path=str(config_path))
    workspace = WorkspaceResource(campaign=campaign)
    return {
        "campaign": campaign,
        "workspace": workspace,
        "catalog": CatalogResource(workspace=workspace),
        "device": DeviceResource(device="cpu"),
        "volume_paths": VolumePathIOManager(workspace=workspace),
    }


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
