"""The training stage (group ``training``): the round's training set and one checkpoint per architecture."""

import dataclasses
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from alqa_core.annotation.rounds import reviewed_cases, revised_slices, round_state
from alqa_core.training.data import load_training_cases
from alqa_core.training.fit import qa_loss_term, train_architecture
from alqa_core.training.training_set import fingerprint, manifest, next_round_index, select_sources, sources_from_manifest
from alqa_dagster.metadata import numbers, table
from alqa_dagster.policies import GPU_TAGS
from alqa_dagster.resources import CampaignResource, CatalogResource, DeviceResource, WorkspaceResource


@dg.asset(
    deps=["original_labels", "preprocessed_volumes"],
    group_name="training",
    kinds={"parquet"},
    description="The round's training set: original (partial) labels plus reassembled labels of reviewed cases. "
    "Opens round 0, or round t+1 once round t's queue is answered.",
)
def training_set(context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource) -> dg.MaterializeResult:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    state = round_state(cat)
    round_index = next_round_index(state.round_index, state.queue_answered)
    sources = select_sources(cat.read("cases"), layout, reviewed_cases(cat), cfg.organ_table, cfg.evaluation.holdout_fraction, revised_slices(cat))
    frame = manifest(sources, round_index)
    cat.write("rounds", f"round_{round_index:03d}", pd.DataFrame([{"round": round_index, "started_at": datetime.now(timezone.utc).isoformat(), "training_cases": len(sources), "training_set_sha256": fingerprint(sources) if sources else ""}]))
    cat.write("training_set", f"round_{round_index:03d}", frame)
    return dg.MaterializeResult(metadata={"round": round_index, "cases": len(sources), "reassembled": int((frame.origin == "reassembled").sum()), "slice_level": int((frame.origin == "revised_slices").sum()), "manifest": table(frame)})


@dg.asset(
    deps=[training_set],
    group_name="training",
    kinds={"pytorch", "monai"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="One checkpoint per configured architecture: trained from scratch in round 0, fine-tuned from "
    "round t-1 (lr 1e-4) after; early stopping on validation Dice. Empty for external-only campaigns.",
)
def model_checkpoints(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource, device: DeviceResource
) -> dg.MaterializeResult:
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    round_index = round_state(cat).round_index
    sources = sources_from_manifest(cat.read("training_set"), round_index)
    train_cfg = dataclasses.replace(cfg.training, device=device.device_name())
    cases = load_training_cases(sources, layout) if cfg.architectures else []
    qa_term = qa_loss_term(cfg.qa_loss, layout, cat.read("cases"), sources, cfg.organ_table, cfg.evaluation.holdout_fraction) if cfg.architectures else None
    summaries = [
        train_architecture(layout, arch, cases, train_cfg, cfg.organ_table, cfg.preprocess.spacing_mm, round_index, fingerprint(sources), lambda e: context.log.debug(str(e)), qa_term)
        for arch in cfg.architectures
    ]
    frame = pd.DataFrame([s.record() for s in summaries])
    for s in summaries:
        cat.write("checkpoints", f"{s.arch}_round_{round_index:03d}", pd.DataFrame([s.record()]))
    dice = {f"{s.arch}_val_dice_mean": s.val_metrics.get("dice_mean", float("nan")) for s in summaries}
    return dg.MaterializeResult(metadata={"round": round_index, "architectures": len(summaries), "checkpoints": table(frame), **numbers(dice)})
