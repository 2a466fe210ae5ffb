"""The QA stage (group ``qa``): montages to grade, and the ResNet-18 regressor trained on the grades."""

from pathlib import Path

import dagster as dg

from alqa_core.rounds import current_round
from alqa_dagster.metadata import numbers, table
from alqa_dagster.policies import CASE_BATCHES, GPU_TAGS, cases_partitions
from alqa_dagster.resources import WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    deps=["soft_predictions", "preprocessed_volumes"],
    group_name="qa",
    kinds={"png"},
    description="Every axial slice of the preprocessed CT with the pseudo label overlaid, 1344 px to grade "
    "(alqa grade CASE 0|1|2) and 256 px for the QA regressor (001).",
)
def qa_montages(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dict[str, Path]:
    from alqa_core.qa.pipeline import write_case_montages  # torch: only in the step that runs it
    cfg, layout, cat = workspace.open()
    round_index = current_round(cat)
    out = {}
    for case_id in context.partition_keys:
        if not layout.pseudo_label(case_id, round_index).exists():
            continue  # refused at ingest, or not predicted this round (case_errors says why)
        m = write_case_montages(layout, case_id, cfg.organ_table, round_index)
        context.add_asset_metadata({"montage": dg.MetadataValue.path(str(m.small_path)), "full_size": dg.MetadataValue.path(str(m.full_path))}, partition_key=case_id)
        out[case_id] = m.full_path
    return out


@dg.asset(
    deps=[qa_montages],
    group_name="qa",
    kinds={"pytorch", "monai"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="A MONAI ResNet-18 regressing the human QA grade from 256 px montages (MSE, split by case); "
    "it scores every case, and predicted failures can feed the outlier queue.",
)
def qa_regressor(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    from alqa_core.qa.pipeline import score_cases, train_regressor_from_grades  # torch: only in the step that runs it
    cfg, layout, cat = workspace.open()
    round_index = max(current_round(cat), 0)
    result, n = train_regressor_from_grades(layout, cat, cfg.qa, layout.qa_regressor(round_index))
    scores = score_cases(layout, layout.qa_regressor(round_index), list(cat.read("cases").case_id), round_index)
    cat.write("qa_scores", f"round_{round_index:03d}", scores)
    top = scores.sort_values("score", ascending=False)
    return dg.MaterializeResult(metadata={"graded_montages": n, "best_epoch": result.best_epoch, "highest_scores": table(top), **numbers({"val_mse": result.val_mse, "baseline_val_mse": result.baseline_val_mse})})
