"""The ensemble stage (group ``ensemble``): every member's soft prediction per case."""

import dataclasses
from pathlib import Path

import dagster as dg

from alqa_core.annotation.rounds import current_round
from alqa_core.ensemble.predict import predict_cases
from alqa_core.ingest.cases import index_campaign
from alqa_dagster.defs.training import model_checkpoints
from alqa_dagster.policies import CASE_BATCHES, GPU_TAGS, cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, DeviceResource, WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    deps=[model_checkpoints],
    group_name="ensemble",
    kinds={"pytorch", "nifti"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Per-organ probabilities (uint8, p x 255) of every ensemble member on the ORIGINAL grid: the "
    "round's trained checkpoints (sliding window, each loaded once per run) and the external members' files.",
)
def soft_predictions(
    context: dg.AssetExecutionContext,
    campaign: CampaignResource,
    workspace: WorkspaceResource,
    catalog: CatalogResource,
    device: DeviceResource,
    preprocessed_volumes: dict[str, Path],
) -> dict[str, Path]:
    cfg, layout = campaign.config(), workspace.layout()
    round_index, index = current_round(catalog.catalog()), index_campaign(cfg)
    checkpoints = [(a.name, layout.checkpoint(a.name, round_index)) for a in cfg.architectures]
    externals = {c: index.predictions_of(c) for c in preprocessed_volumes}
    members = predict_cases(layout, list(preprocessed_volumes), checkpoints, externals, dataclasses.replace(cfg.inference, device=device.device_name()), cfg.organ_table)
    for case_id, infos in members.items():
        context.add_asset_metadata({"round": round_index, "members": ", ".join(i.name for i in infos)}, partition_key=case_id)
    return {c: layout.soft_prediction(c, "x").parent for c in members}
