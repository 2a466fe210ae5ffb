"""The training stage (group ``training``): the round's training set and one checkpoint per ensemble member."""

import dagster as dg
import pandas as pd

from alqa_core.training.fit import train_round
from alqa_core.training.round_start import open_round
from alqa_dagster.metadata import numbers, table
from alqa_dagster.policies import GPU_TAGS
from alqa_dagster.resources import DeviceResource, WorkspaceResource


@dg.asset(
    deps=["original_labels", "preprocessed_volumes"],
    group_name="training",
    kinds={"parquet"},
    description="The round's training set: original (partial) labels plus reassembled labels of reviewed cases, over "
    "the ingested cases. Opens round 0, or round t+1 once round t is answered, closed or converged (else round t again).",
)
def training_set(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    cfg, layout, cat = workspace.open()
    opened = open_round(cat, layout, cfg)
    frame = opened.manifest
    context.log.info(f"round {opened.round_index} opened (attempt {opened.record.attempts}): {opened.record.reason}")
    return dg.MaterializeResult(metadata={
        "round": opened.round_index, "attempt": opened.record.attempts, "cases": len(opened.sources), "state": opened.record.reason,
        "reassembled": int((frame.origin == "reassembled").sum()) if not frame.empty else 0,
        "slice_level": int((frame.origin == "revised_slices").sum()) if not frame.empty else 0, "manifest": table(frame),
    })


@dg.asset(
    deps=[training_set],
    group_name="training",
    kinds={"pytorch", "monai"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="One checkpoint per ensemble member (architectures x members): trained from scratch in round 0, "
    "fine-tuned from the member's latest checkpoint (lr 1e-4) after; early stopping on validation Dice. Skips, "
    "saying why, when there is nothing to train (external members only, or an empty training set).",
)
def model_checkpoints(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, device: DeviceResource
) -> dg.MaterializeResult:
    cfg, layout, cat = workspace.open()
    done = train_round(layout, cat, cfg, device.device_name(), lambda e: context.log.debug(str(e)))
    if done.skipped:
        context.log.info(f"round {done.round_index}: {done.skipped}")
    frame = dg.MetadataValue.text(done.skipped) if done.skipped else table(pd.DataFrame([s.record() for s in done.summaries]))
    dice = {f"{s.arch}_val_dice_mean": s.val_metrics.get("dice_mean", float("nan")) for s in done.summaries}
    return dg.MaterializeResult(metadata={"round": done.round_index, "members_trained": len(done.summaries), "checkpoints": frame, **numbers(dice)})
