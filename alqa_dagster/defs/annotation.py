"""The annotation stage (group ``annotation``): priority list, queue with work packages, revisions, reassembly."""

from pathlib import Path

import dagster as dg
import pandas as pd

from alqa_core.annotation.effort import submission_efforts
from alqa_core.annotation.queue import priority_from_attention, queue_for_round, write_packages
from alqa_core.annotation.reassembly import reassemble_case
from alqa_core.annotation.revisions import revisions_of, write_revised_label
from alqa_core.annotation.rounds import accepted_submissions, current_round
from alqa_core.qa.grades import latest_grades
from alqa_dagster.metadata import numbers, table
from alqa_dagster.policies import CASE_BATCHES, cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource


@dg.asset(
    deps=["attention_maps"],
    group_name="annotation",
    kinds={"duckdb", "parquet"},
    description="Cases ranked by attention size (relative to organ volume, per cm of scan), with the organs to fix "
    "in order; ties broken by case id.",
)
def priority_list(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    cat = catalog.catalog()
    round_index = current_round(cat)
    attention = cat.query("SELECT * FROM attention_organ WHERE round = ?", [round_index])
    priority = priority_from_attention(attention, cat.read("cases"))
    frame = pd.DataFrame(priority.to_records(round_index))
    cat.write("priority", f"round_{round_index:03d}", frame)
    top = frame.head(1).score.iloc[0] if len(frame) else 0.0
    return dg.MaterializeResult(metadata={"round": round_index, "cases": len(frame), "top": table(frame), **numbers({"top_score": top})})


@dg.asset(
    deps=[priority_list],
    group_name="annotation",
    kinds={"nifti", "parquet"},
    description="The round's budget from the top of the priority list (default 5%), one work package per case: "
    "image, pseudo label with named segments, attention heatmap, preview, task.json.",
)
def annotation_queue(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    round_index = current_round(cat)
    priority = priority_from_attention(cat.query("SELECT * FROM attention_organ WHERE round = ?", [round_index]), cat.read("cases"))
    subs = accepted_submissions(cat, round_index)
    queue = queue_for_round(priority, cfg.budget, () if subs.empty else tuple(subs.case_id), grades=latest_grades(cat), predicted=cat.read("qa_scores"))
    packages = write_packages(layout, queue, round_index, cfg.organ_table)
    frame = pd.DataFrame(queue.to_records(round_index), columns=["round", "position", "case_id", "dataset", "score", "organs"])
    frame["work_package"] = [str(p.folder) for p in packages]
    frame["created_at"] = [p.created_at for p in packages]
    cat.write("queue", f"round_{round_index:03d}", frame)
    return dg.MaterializeResult(metadata={"round": round_index, "queued": len(frame), "budget": queue.budget, "queue": table(frame)})


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="annotation",
    kinds={"nifti"},
    description="The annotator's label for the case: the latest accepted revision (rule: latest accepted wins), or "
    "the pseudo label the annotator confirmed. Materialized by the submissions sensor.",
)
def revised_labels(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource
) -> dict[str, Path]:
    cfg, layout, subs = campaign.config(), workspace.layout(), catalog.catalog().read("submissions")
    out = {}
    for case_id in context.partition_keys:
        revisions = revisions_of(case_id, subs, layout, cfg.organ_table)
        if not revisions:
            raise dg.Failure(f"case {case_id} has no accepted submission; nothing to revise")
        out[case_id] = write_revised_label(layout, case_id, revisions, cfg.organ_table)
        effort = submission_efforts(layout, case_id, subs, cfg.organ_table)
        for submission_id, rows in effort.groupby("submission_id") if not effort.empty else ():
            catalog.catalog().write("effort", str(submission_id), rows)
        spent = {"minutes": effort.groupby("submission_id").minutes.first().sum(), "changed_ml": effort.changed_ml.sum()} if not effort.empty else {}
        context.add_asset_metadata({"submissions": len(revisions), "latest": revisions[-1].submission_id, "annotator": revisions[-1].annotator, **numbers(spent)}, partition_key=case_id)
    return out


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    deps=["original_labels", "soft_predictions", revised_labels],
    group_name="annotation",
    kinds={"nifti", "parquet"},
    description="Per organ: original (dataset) > revised (annotator) > pseudo (argmax of the ensemble mean), "
    "with the provenance of each organ in the catalog.",
)
def reassembled_labels(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource
) -> dict[str, Path]:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    cases, subs = cat.read("cases").set_index("case_id"), cat.read("submissions")
    out = {}
    for case_id in context.partition_keys:
        organs = [o for o in str(cases.loc[case_id].annotated_organs).split(",") if o]
        result = reassemble_case(layout, case_id, organs, revisions_of(case_id, subs, layout, cfg.organ_table), cfg.organ_table)
        records = pd.DataFrame(result.to_records())
        cat.write("provenance", case_id, records)
        context.add_asset_metadata({"provenance": table(records), **numbers(records.groupby("source").size().to_dict(), "organs_")}, partition_key=case_id)
        out[case_id] = layout.reassembled_label(case_id)
    return out
