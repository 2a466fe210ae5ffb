"""The attention stage (group ``attention``): Eq. 1-4 per case and round, and attention sizes in the catalog."""

import dagster as dg

from alqa_core.attention.case import attention_for_cases
from alqa_core.rounds import current_round
from alqa_dagster.metadata import run_summary
from alqa_dagster.policies import CASE_BATCHES, cases_partitions, in_chunks
from alqa_dagster.resources import WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    deps=["soft_predictions"],
    group_name="attention",
    kinds={"nifti", "parquet"},
    description="Eq. 1-4 of AbdomenAtlas per organ (inconsistency + uncertainty + overlap, cleaned in mm) on the "
    "original grid, kept per round, and the attention size per case, organ and slice in the catalog.",
)
def attention_maps(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> None:
    cfg, layout, cat = workspace.open()
    round_index, rows = current_round(cat), []
    for chunk in in_chunks(context.partition_keys, cfg.batch.cases_per_run):  # heatmaps of one chunk in memory at a time
        for case_id, r in attention_for_cases(layout, cat, chunk, cfg.attention, cfg.organ_table, round_index).items():
            rows.append({"case_id": case_id, "attention_ml": r.size.attention_ml, "attention_relative": r.size.relative,
                         "attention_relative_per_cm": r.size.relative_per_cm, "preview": str(layout.preview("attention_maps", case_id))})
    run_summary(context, rows, round=round_index, catalog_tables="attention_case, attention_organ, attention_slice")
