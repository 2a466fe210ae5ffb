"""The annotation stage (group ``annotation``): priority list, queue with work packages, revisions, reassembly."""

from collections import Counter
from pathlib import Path

import dagster as dg

from alqa_core.annotation.labelled.reassemble_cases import reassemble_cases
from alqa_core.annotation.labelled.revise_cases import revise_cases
from alqa_core.annotation.queue.round_queue import priority_for_round, queue_round
from alqa_core.rounds import current_round
from alqa_dagster.metadata import numbers, png_markdown, run_summary, table
from alqa_dagster.policies import CASE_BATCHES, cases_partitions, in_chunks
from alqa_dagster.resources import CatalogResource, WorkspaceResource


@dg.asset(
    deps=["attention_maps"],
    group_name="annotation",
    kinds={"duckdb", "parquet"},
    description="Cases ranked by attention size (relative to organ volume, per cm of scan), with the organs to fix "
    "in order; ties broken by case id. Marks the round predicted.",
)
def priority_list(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    cat = catalog.catalog()
    round_index = current_round(cat)
    frame = priority_for_round(cat, round_index)
    top = float(frame.score.iloc[0]) if len(frame) else 0.0
    return dg.MaterializeResult(metadata={"round": round_index, "cases": len(frame), "top": table(frame), **numbers({"top_score": top})})


@dg.asset(
    deps=[priority_list],
    group_name="annotation",
    kinds={"nifti", "parquet"},
    description="The round's budget from the top of the priority list (default 5%), one immutable work package version "
    "per case: image, pseudo label with named segments, attention heatmap, preview, task.json. An empty queue converges.",
)
def annotation_queue(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    cfg, layout, cat = workspace.open()
    round_index = current_round(cat)
    done = queue_round(layout, cat, cfg, round_index)
    # only queued cases get inline previews in the event log; every other preview is a file in the workspace
    previews = {f"preview_{p.case_id}": png_markdown((p.folder / "preview.png").read_bytes(), p.case_id) for p in done.packages[:10]}
    return dg.MaterializeResult(metadata={"round": round_index, "queued": len(done.frame), "budget": done.queue.budget, "queue": table(done.frame), **previews})


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="annotation",
    kinds={"nifti"},
    description="The annotator's label for the case: the latest accepted revision (rule: latest accepted wins), or "
    "the pseudo label of the work package the annotator confirmed. Materialized by the submissions sensor; a case "
    "nobody answered has none.",
)
def revised_labels(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dict[str, Path]:
    cfg, layout, cat = workspace.open()
    rows = []
    for chunk in in_chunks(context.partition_keys, cfg.batch.cases_per_run):  # label maps of one chunk in memory at a time
        for case_id, done in revise_cases(layout, cat, chunk, cfg.organ_table).items():
            spent = {"minutes": done.effort.groupby("submission_id").minutes.first().sum(), "changed_ml": done.effort.changed_ml.sum()} if not done.effort.empty else {}
            rows.append({"case_id": case_id, "submissions": done.submissions, "latest": done.chosen, "annotator": done.annotator, **spent})
    run_summary(context, rows, unanswered=len(context.partition_keys) - len(rows), catalog_tables="revisions, effort")
    return {r["case_id"]: layout.revised_label(r["case_id"]) for r in rows}


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    deps=["original_labels", "soft_predictions", revised_labels],
    group_name="annotation",
    kinds={"nifti", "parquet"},
    description="The labelled dataset, every case every round: per organ original (dataset) > revised (annotator) > "
    "pseudo (the round's argmax of the ensemble mean), with the provenance of each organ in the catalog.",
)
def reassembled_labels(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dict[str, Path]:
    cfg, layout, cat = workspace.open()
    round_index, rows = current_round(cat), []
    for chunk in in_chunks(context.partition_keys, cfg.batch.cases_per_run):  # label maps of one chunk in memory at a time
        results, moved = reassemble_cases(layout, cat, chunk, cfg.organ_table, round_index)
        rows += [{"case_id": c, "pseudo_round": r.pseudo_round, **{f"organs_{k}": n for k, n in Counter(str(p.source) for p in r.provenance).items()}} for c, r in results.items()]
        if moved is not None:
            context.log.info(f"round {moved.round_index} is now {moved.state}: {moved.reason}")
    run_summary(context, rows, round=round_index, catalog_tables="provenance")
    return {r["case_id"]: layout.reassembled_label(r["case_id"]) for r in rows}
