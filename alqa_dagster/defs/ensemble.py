"""The ensemble stage (group ``ensemble``): every member's soft prediction and the pseudo label, per case and round."""

from pathlib import Path

import dagster as dg

from alqa_core.config.campaign import CampaignConfig
from alqa_core.ensemble.members import organs_with_few_members
from alqa_core.ensemble.predict import predict_round
from alqa_core.rounds import current_round
from alqa_dagster.defs.training import model_checkpoints
from alqa_dagster.metadata import refusals, run_summary, went_on_without
from alqa_dagster.policies import CASE_BATCHES, GPU_TAGS, cases_partitions
from alqa_dagster.resources import DeviceResource, WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    deps=[model_checkpoints],
    group_name="ensemble",
    kinds={"pytorch", "nifti"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Per-organ probabilities (uint8, p x 255) of every ensemble member on the ORIGINAL grid, kept per "
    "round: each member's latest checkpoint (sliding window, loaded once per run; MC-dropout passes count as members) "
    "and the external members' files; then the round's pseudo label (argmax of the ensemble mean).",
)
def soft_predictions(
    context: dg.AssetExecutionContext,
    workspace: WorkspaceResource,
    device: DeviceResource,
    preprocessed_volumes: dict[str, Path],
) -> None:
    cfg, layout, cat = workspace.open()
    round_index = current_round(cat)
    result = predict_round(layout, cat, cfg, list(preprocessed_volumes), round_index, device.device_name())
    failed = {c: result.failed_members[c] for c in result.members if c in result.failed_members}
    rows = [{"case_id": c, "members": ", ".join(i.name for i in infos), "members_failed": ", ".join(f.member for f in failed.get(c, ())),
             **_few_members(context, cfg, c, infos)} for c, infos in result.members.items()]
    run_summary(context, rows, round=round_index, refused=len(result.errors), went_on_without_a_member=len(failed))
    refusals(context, {c: {"stage": "soft_predictions", "file": "", "reason": r} for c, r in result.errors.items()})
    went_on_without(context, {c: ([i.name for i in result.members[c]], [f.render() for f in lost]) for c, lost in failed.items()})


def _few_members(context, cfg: CampaignConfig, case_id: str, infos) -> dict:
    """Eq. 1's spread needs two members per organ: warn, in the log and in the run's summary, where it has fewer."""
    few = organs_with_few_members(infos, cfg.organ_table)
    if not few:
        return {"organs_with_fewer_than_2_members": ""}
    text = ", ".join(f"{o} ({n})" for o, n in few.items())
    context.log.warning(f"case {case_id}: fewer than 2 members cover {text}; inconsistency (Eq. 1) is zero there")
    return {"organs_with_fewer_than_2_members": text}
