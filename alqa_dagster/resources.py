"""Resources and the IO manager: where alqa's files and tables live.

- :class:`CampaignResource` reads the campaign YAML (``ALQA_CAMPAIGN``).
- :class:`WorkspaceResource` names the workspace root (``ALQA_WORKSPACE``, else
  the campaign's ``workspace_root``, which defaults to ``./alqa_workspace``), and
  opens the campaign for an asset body: ``cfg, layout, cat = workspace.open()``.
- :class:`CatalogResource` gives the Parquet + DuckDB catalog in it.
- :class:`DeviceResource` picks CPU or CUDA.
- :class:`VolumePathIOManager` hands per-case volumes between assets as file
  paths. Arrays are never pickled: assets write NIfTI files atomically through
  alqa_core and return the paths; downstream assets get the paths back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg

from alqa_core.case_errors import failed_cases
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig, load_campaign
from alqa_core.workspace import WorkspaceLayout


class CampaignResource(dg.ConfigurableResource):
    """The campaign config file (YAML written by ``alqa init``)."""

    config_path: str

    @cached_property
    def _config(self) -> CampaignConfig:
        return load_campaign(self.config_path)

    def config(self) -> CampaignConfig:
        return self._config


@dataclass(frozen=True)
class OpenCampaign:
    """What an asset or sensor body works with: ``cfg, layout, cat = workspace.open()``."""

    config: CampaignConfig
    layout: WorkspaceLayout
    catalog: Catalog

    def __iter__(self) -> Iterator:
        return iter((self.config, self.layout, self.catalog))


class WorkspaceResource(dg.ConfigurableResource):
    """The workspace root; empty means the campaign's ``workspace_root``."""

    campaign: CampaignResource
    root: str = ""

    def layout(self) -> WorkspaceLayout:
        return self.campaign.config().layout(self.root)

    def open(self) -> OpenCampaign:
        """The campaign's config, its workspace and the catalog in it, at once."""
        layout = self.layout()
        return OpenCampaign(self.campaign.config(), layout, Catalog(layout.catalog))


class CatalogResource(dg.ConfigurableResource):
    """Tabular facts: one Parquet file per (table, partition), DuckDB views to read."""

    workspace: WorkspaceResource

    def catalog(self) -> Catalog:
        return Catalog(self.workspace.layout().catalog)


class DeviceResource(dg.ConfigurableResource):
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``."""

    device: str = "auto"

    def device_name(self) -> str:
        """The setting handed to the core, which resolves ``auto`` where a network runs (no torch here)."""
        return self.device


class VolumePathIOManager(dg.ConfigurableIOManager):
    """Passes ``{case_id: Path}`` mappings between per-case assets.

    An asset returns the files it wrote (one path, or a folder, per case);
    this checks they exist inside the workspace and records how many. A
    downstream asset receives ``{case_id: Path}`` for the partitions it reads,
    without the cases refused at ingest (open ``case_errors``: they are left
    out of everything downstream), and a clear error if another is missing.
    """

    workspace: WorkspaceResource

    def _asset_dir(self, key: dg.AssetKey) -> Path:
        return self.workspace.layout().root / key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if not isinstance(obj, Mapping):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a mapping case_id -> Path, got {type(obj).__name__}")
        root = self.workspace.layout().root
        for case_id, path in obj.items():
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"{path}: {context.asset_key.to_user_string()} reported it for case {case_id} but it does not exist")
            if root not in path.resolve().parents:
                raise ValueError(f"{path}: outside the workspace {root}")
        context.add_output_metadata({"files": len(obj)})

    def load_input(self, context: dg.InputContext) -> dict[str, Path]:
        key = context.asset_key
        folder = self._asset_dir(key)
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        refused = failed_cases(Catalog(self.workspace.layout().catalog))
        skipped = [c for c in keys if c in refused]
        if skipped:
            context.log.warning(f"{len(skipped)} case(s) refused at ingest are left out (see case_errors): {', '.join(skipped[:20])}")
        out: dict[str, Path] = {}
        for case_id in (c for c in keys if c not in refused):
            candidates = [folder / f"{case_id}.nii.gz", folder / case_id]
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                raise FileNotFoundError(
                    f"{folder}: no {key.to_user_string()} for case {case_id}; materialize that partition first"
                )
            out[case_id] = found
        return out
