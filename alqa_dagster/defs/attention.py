"""The attention stage (group ``attention``): Eq. 1-4 per case, and attention sizes in the catalog."""

from pathlib import Path

import dagster as dg
import pandas as pd

from alqa_core.annotation.rounds import current_round
from alqa_core.attention.case import attention_preview, case_attention
from alqa_core.ensemble.pseudo_labels import case_pseudo_label
from alqa_dagster.metadata import numbers, png_markdown
from alqa_dagster.policies import CASE_BATCHES, cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="attention",
    kinds={"nifti", "parquet"},
    description="Eq. 1-4 of AbdomenAtlas per organ (inconsistency + uncertainty + overlap, cleaned in mm) on the "
    "original grid, and the attention size per case, organ and slice in the catalog.",
)
def attention_maps(
    context: dg.AssetExecutionContext,
    campaign: CampaignResource,
    workspace: WorkspaceResource,
    catalog: CatalogResource,
    soft_predictions: dict[str, Path],
) -> dict[str, Path]:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    round_index, cases = current_round(cat), cat.read("cases").set_index("case_id")
    out = {}
    for case_id in soft_predictions:
        row = cases.loc[case_id]
        result = case_attention(layout, case_id, row.dataset, [o for o in str(row.annotated_organs).split(",") if o], cfg.attention, cfg.organ_table)
        records = result.size.to_records(round_index)
        for name in ("attention_case", "attention_organ", "attention_slice"):
            cat.write(name, f"{case_id}_round_{round_index:03d}", pd.DataFrame(list(getattr(records, name))))
        preview = attention_preview(layout, case_id, result, case_pseudo_label(layout, case_id, cfg.organ_table), cfg.organ_table)
        sizes = {"attention_ml": result.size.attention_ml, "attention_relative": result.size.relative, "attention_relative_per_cm": result.size.relative_per_cm}
        context.add_asset_metadata({"round": round_index, "preview": png_markdown(preview), **numbers(sizes)}, partition_key=case_id)
        out[case_id] = layout.attention_map(case_id)
    return out
