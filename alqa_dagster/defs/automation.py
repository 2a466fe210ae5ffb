"""Jobs and sensors: new cases, annotator submissions, and the round loop."""

import json
from pathlib import Path

import dagster as dg

from alqa_core.annotation.intake import process_inbox
from alqa_core.annotation.rounds import accepted_submissions, awaiting_reassembly, current_round, round_state
from alqa_core.ingest.cases import index_campaign
from alqa_dagster.policies import cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=["raw_scans", "original_labels", "preprocessed_volumes"],
    description="Ingest cases: raw scans, original labels, preprocessed volumes (batched over a partition range).",
)
revision_job = dg.define_asset_job(
    "revision_job",
    selection=["revised_labels", "reassembled_labels"],
    description="An accepted submission: the case's revised label, then its reassembled label.",
)
ROUND_ASSETS = [
    "training_set",
    "model_checkpoints",
    "soft_predictions",
    "attention_maps",
    "priority_list",
    "annotation_queue",
    "evaluation_report",
]
round_job = dg.define_asset_job(
    "round_job",
    selection=ROUND_ASSETS,
    description="One round: training set, (fine-)tuned checkpoints in the gpu pool, predictions and attention for "
    "every case (one batched run), priority list, queue with work packages, evaluation. Launch it over all "
    "case partitions (a partition range).",
)


def submission_run_key(case_id: str, sha256: str) -> str:
    """The run_key of an accepted submission: its case and content (the same bytes for two cases are two runs)."""
    return f"submission:{case_id}:{sha256}"


def _launched_keys(instance: dg.DagsterInstance, prefix: str) -> set[str]:
    """Every run_key starting with ``prefix`` that has a run: one query per tick, not one per submission."""
    return {v for _, values in instance.get_run_tags(tag_keys=["dagster/run_key"], value_prefix=prefix) for v in values}


def range_tags(keys) -> dict:
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, description="Registers new cases found in the datasets and ingests them in one batched run.")
def new_cases_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource):
    found = sorted(index_campaign(campaign.config()).cases)
    known = set(context.instance.get_dynamic_partitions(cases_partitions.name))
    new = [c for c in found if c not in known]
    if not new:
        return dg.SkipReason(f"no new cases ({len(known)} registered)")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"ingest:{new[0]}..{new[-1]}:{len(new)}", tags=range_tags(new))],
        dynamic_partitions_requests=[cases_partitions.build_add_request(new)],
        cursor=str(len(known) + len(new)),
    )


@dg.sensor(job=revision_job, minimum_interval_seconds=30, description="Validates annotator submissions in the inbox; accepted ones trigger revised and reassembled labels.")
def submissions_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource):
    cfg, layout, cat = campaign.config(), workspace.layout(), catalog.catalog()
    known = context.instance.get_dynamic_partitions(cases_partitions.name)
    round_index = current_round(cat)
    # The inbox is the queue (every entry taken leaves it), so the tick takes its oldest
    # submissions.max_per_tick entries whatever their file times; the cursor records progress only.
    result = process_inbox(layout, cat, known, cfg.organ_table, cfg.submissions, round_index)
    for row in result.rejected:
        context.log.warning(f"rejected submission {row['entry']} (quarantined): {row['reasons']}")
    for row in result.duplicates:
        context.log.info(f"duplicate of an earlier submission, not processed again: {row['entry']}")
    for name in result.recovered:
        context.log.info(f"finished moving {name} out of the inbox (recorded by a tick that did not complete)")
    for problem in result.stuck:
        context.log.warning(f"recorded but still in the inbox (retried next tick): {problem}")
    for problem in result.deferred:
        context.log.info(f"waiting for the case's ingest (retried next tick): {problem}")
    # Every accepted submission of the round whose run was never launched, oldest first and at most
    # max_per_tick: this tick's, and any that a tick which died after recording them left behind.
    # Run keys make a repeat a no-op either way.
    accepted = accepted_submissions(cat, round_index)
    launched = _launched_keys(context.instance, "submission:")
    rows = () if accepted.empty else accepted.sort_values(["submitted_at", "sha256"]).itertuples()
    # a row whose file a dying tick left in the inbox is requested once the file is in the store
    keys = [(submission_run_key(r.case_id, r.sha256), r.case_id) for r in rows if not r.stored_path or Path(r.stored_path).exists()]
    keys = [(k, c) for k, c in dict(keys).items() if k not in launched][: cfg.submissions.max_per_tick]
    requests = [dg.RunRequest(run_key=k, partition_key=c) for k, c in keys]
    cursor = json.dumps(list(result.cursor)) if result.cursor else context.cursor
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(job=round_job, minimum_interval_seconds=60, description="When every case of the round's queue is answered, launches the next round (fine-tune, re-predict, re-rank).")
def round_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource):
    state = round_state(catalog.catalog())
    if state.round_index < 0 or not state.queue:
        return dg.SkipReason("no round has written a queue yet")
    if state.converged:
        return dg.SkipReason(f"campaign converged in round {state.round_index}: {state.decision.reason}")
    if not state.queue_answered:
        return dg.SkipReason(f"round {state.round_index}: waiting for {len(state.pending)} of {len(state.queue)} queued cases")
    waiting = awaiting_reassembly(catalog.catalog(), state.round_index)
    if waiting:
        return dg.SkipReason(f"round {state.round_index}: {len(waiting)} accepted submissions not reassembled yet")
    keys = context.instance.get_dynamic_partitions(cases_partitions.name)
    return dg.RunRequest(run_key=f"round:{state.round_index + 1}", tags=range_tags(keys))
