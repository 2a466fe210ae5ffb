"""The attention stage (group ``attention``): Eq. 1-4 per case and round, and attention sizes in the catalog."""

import dagster as dg

from alqa_core.attention.case import attention_for_cases
from alqa_core.rounds import current_round
from alqa_dagster.metadata import numbers
from alqa_dagster.policies import CASE_BATCHES, cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    deps=["soft_predictions"],
    group_name="attention",
    kinds={"nifti", "parquet"},
    description="Eq. 1-4 of AbdomenAtlas per organ (inconsistency + uncertainty + overlap, cleaned in mm) on the "
    "original grid, kept per round, and the attention size per case, organ and slice in the catalog.",
)
def attention_maps(context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource) -> None:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    round_index = current_round(cat)
    results = attention_for_cases(layout, cat, context.partition_keys, cfg.attention, cfg.organ_table, round_index)
    for case_id, result in results.items():
        sizes = {"attention_ml": result.size.attention_ml, "attention_relative": result.size.relative, "attention_relative_per_cm": result.size.relative_per_cm}
        preview = dg.MetadataValue.path(str(layout.preview("attention_maps", case_id)))
        context.add_asset_metadata({"round": round_index, "preview": preview, **numbers(sizes)}, partition_key=case_id)
