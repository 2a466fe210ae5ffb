"""The evaluation stage (group ``evaluation``): the round's report, held-out original labels against the ensemble."""

import dagster as dg
import pandas as pd

from alqa_core.rounds import current_round
from alqa_core.training.training_set import holdout_cases
from alqa_dagster.metadata import numbers, table
from alqa_dagster.resources import WorkspaceResource


@dg.asset(
    deps=["soft_predictions"],
    group_name="evaluation",
    kinds={"duckdb", "parquet"},
    description="Dice, NSD, HD95, MSD and RVE per organ on held-out labelled cases (never trained on), for each "
    "member and the ensemble; mean, sd, 5th/95th percentiles; a paired test against the previous round.",
)
def evaluation_report(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    from alqa_core.evaluation.report import compare_rounds, evaluate_round, summary_frame  # torch/MONAI: only in the step that runs it
    cfg, layout, cat = workspace.open()
    round_index, cases = current_round(cat), cat.read("cases")
    metrics = evaluate_round(layout, cases, holdout_cases(cases, cfg.evaluation.holdout_fraction), cfg.organ_table, round_index, cfg.evaluation.nsd_tolerance_mm)
    cat.write("metrics", f"round_{round_index:03d}", metrics if not metrics.empty else pd.DataFrame(columns=["case_id", "organ", "round"]))
    summary = summary_frame(metrics)
    dice = summary[summary.metric == "dice"].set_index("organ")["mean"].to_dict() if not summary.empty else {}
    history = cat.read("metrics")
    test = compare_rounds(history, round_index, round_index - 1) if round_index > 0 else None
    meta = {"round": round_index, "holdout_rows": len(metrics), "summary": table(summary, 60), **numbers(dice, "dice_")}
    return dg.MaterializeResult(metadata={**meta, **({"vs_previous_round": table(pd.DataFrame([test]))} if test else {})})
