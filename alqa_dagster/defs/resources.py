"""The resources every alqa asset uses, bound to environment variables.

``ALQA_CAMPAIGN`` names the campaign YAML; ``ALQA_WORKSPACE`` (optional)
overrides its workspace root; ``ALQA_DEVICE`` (optional) forces cpu/cuda.
"""

import os

import dagster as dg

from alqa_dagster.resources import (
    CampaignResource,
    CatalogResource,
    DeviceResource,
    VolumePathIOManager,
    WorkspaceResource,
)


def _optional_env(name: str, default: str):
    # Bind to the variable only when it is set, so an unset one means the default.
    return dg.EnvVar(name) if name in os.environ else default


@dg.definitions
def resources() -> dg.Definitions:
    campaign = CampaignResource(config_path=dg.EnvVar("ALQA_CAMPAIGN"))
    workspace = WorkspaceResource(campaign=campaign, root=_optional_env("ALQA_WORKSPACE", ""))
    return dg.Definitions(
        resources={
            "campaign": campaign,
            "workspace": workspace,
            "catalog": CatalogResource(workspace=workspace),
            "device": DeviceResource(device=_optional_env("ALQA_DEVICE", "auto")),
            "volume_paths": VolumePathIOManager(workspace=workspace),
        }
    )
