"""Asset checks: geometry, organ-table values, and a queue unless the campaign converged (cases refused at ingest are skipped)."""

import dagster as dg

from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.case_errors import failed_cases
from alqa_core.checks import grid_mismatches, unknown_label_values
from alqa_core.rounds import current_round
from alqa_dagster.policies import cases_partitions
from alqa_dagster.resources import CatalogResource, WorkspaceResource


def _checked(context: dg.AssetCheckExecutionContext, cat) -> list[str]:
    """The partitions to check: the run's cases, without those refused at ingest (they have no files by design)."""
    refused = failed_cases(cat)
    return [c for c in context.partition_keys if c not in refused]


@dg.asset_check(asset="original_labels", partitions_def=cases_partitions, description="Every original label lies on its raw scan's grid.")
def original_labels_on_raw_grid(context: dg.AssetCheckExecutionContext, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    _, layout, cat = workspace.open()
    keys = _checked(context, cat)
    bad = grid_mismatches((c, layout.original_label(c), layout.raw_scan(c)) for c in keys)
    return dg.AssetCheckResult(passed=not bad, metadata={"checked": len(keys), "mismatched": ", ".join(bad) or "none"})


@dg.asset_check(asset="attention_maps", partitions_def=cases_partitions, description="Attention maps lie on the raw scan's grid (annotators overlay them on the CT).")
def attention_on_raw_grid(context: dg.AssetCheckExecutionContext, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    _, layout, cat = workspace.open()
    t, unpredicted = current_round(cat), failed_cases(cat, ("soft_predictions",))
    keys = [c for c in _checked(context, cat) if c not in unpredicted]
    bad = grid_mismatches((c, layout.attention_map(c, t), layout.raw_scan(c)) for c in keys)
    return dg.AssetCheckResult(passed=not bad, metadata={"round": t, "checked": len(keys), "mismatched": ", ".join(bad) or "none"})


@dg.asset_check(asset="reassembled_labels", partitions_def=cases_partitions, description="Reassembled labels hold only organ-table values and lie on the raw scan's grid.")
def reassembled_labels_valid(context: dg.AssetCheckExecutionContext, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    cfg, layout, cat = workspace.open()
    table = cfg.organ_table
    keys = [c for c in _checked(context, cat) if layout.reassembled_label(c).exists()]
    bad_values = unknown_label_values(((c, layout.reassembled_label(c)) for c in keys), table)
    bad_grid = grid_mismatches((c, layout.reassembled_label(c), layout.raw_scan(c)) for c in keys)
    return dg.AssetCheckResult(passed=not bad_values and not bad_grid, metadata={"checked": len(keys), "unknown_values": str(bad_values or "none"), "off_grid": ", ".join(bad_grid) or "none"})


@dg.asset_check(asset="annotation_queue", description="The queue is non-empty unless the campaign converged.")
def queue_not_empty(catalog: CatalogResource) -> dg.AssetCheckResult:
    state = round_state(catalog.catalog())
    return dg.AssetCheckResult(passed=bool(state.queue) or state.converged, metadata={"round": state.round_index, "state": state.state, "queued": len(state.queue)})
