"""Jobs and sensors: new (and fixed) cases, annotator submissions, and the round loop."""

import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from alqa_core.annotation.intake.process import process_inbox
from alqa_core.annotation.labelled.rounds import accepted_submissions, awaiting_reassembly, close_round, round_state
from alqa_core.case_errors import INGEST_STAGES, open_case_errors, source_fingerprint
from alqa_core.ingest.cases import index_campaign
from alqa_core.rounds import IN_FLIGHT, current_round, latest_round
from alqa_dagster.policies import cases_partitions, in_chunks
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: the tag every round run carries: the round it works on (the round sensor's retries look it up)
ROUND_TAG = "alqa/round"
IN_PROGRESS = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=["raw_scans", "original_labels", "preprocessed_volumes"],
    description="Ingest cases: raw scans, original labels, preprocessed volumes (batched over a partition range). "
    "A refused case is recorded in case_errors and the others go on.",
)
revision_job = dg.define_asset_job(
    "revision_job",
    selection=["revised_labels", "reassembled_labels"],
    description="An accepted submission: the case's revised label, then its reassembled label.",
)
reassemble_job = dg.define_asset_job(
    "reassemble_job",
    selection=["revised_labels", "reassembled_labels"],
    description="Every case's revised label (from its accepted answers) and reassembled label (original > revised > "
    "pseudo) with provenance: launch it over all case partitions for the labelled dataset as it stands (alqa reassemble).",
)
ROUND_ASSETS = [
    "training_set",
    "model_checkpoints",
    "soft_predictions",
    "attention_maps",
    "reassembled_labels",
    "priority_list",
    "annotation_queue",
    "evaluation_report",
]
round_job = dg.define_asset_job(
    "round_job",
    selection=ROUND_ASSETS,
    description="One round: training set, (fine-)tuned checkpoints in the gpu pool, predictions and attention for "
    "every case (one batched run), every case's reassembled label, priority list, queue with work packages, "
    "evaluation. Launch it over all case partitions (a partition range).",
)


def submission_run_key(case_id: str, sha256: str) -> str:
    """The run_key of an accepted submission: its case and content (the same bytes for two cases are two runs)."""
    return f"submission:{case_id}:{sha256}"


def round_run_key(round_index: int, attempt: int) -> str:
    """The run_key of a round's run: the attempt, not the round, so a failed round can be launched again."""
    return f"round:{round_index}:{attempt}"


def _launched_keys(instance: dg.DagsterInstance, prefix: str) -> set[str]:
    """Every run_key starting with ``prefix`` that has a run: one query per tick, not one per submission."""
    return {v for _, values in instance.get_run_tags(tag_keys=["dagster/run_key"], value_prefix=prefix) for v in values}


def range_tags(keys) -> dict:
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def _retry_keys(cases, errors) -> list[tuple[str, str]]:
    """(case, fingerprint) for every case refused at ingest whose source file changed since (a fixed file)."""
    out = []
    for r in errors.itertuples():
        now = source_fingerprint(r.source) if r.source else ""
        if now and now != r.source_fingerprint and r.case_id in cases:
            out.append((r.case_id, now))
    return sorted(set(out))


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, description="Registers new cases found in the datasets and ingests them in batched runs of batch.cases_per_run cases; retries a refused case once its file changed.")
def new_cases_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource, catalog: CatalogResource):
    cfg = campaign.config()
    found = index_campaign(cfg).cases
    known = set(context.instance.get_dynamic_partitions(cases_partitions.name))
    new = sorted(c for c in found if c not in known)
    retries = _retry_keys(found, open_case_errors(catalog.catalog(), INGEST_STAGES))
    # the new partitions are added in this order, so each chunk is a contiguous partition range
    requests = [dg.RunRequest(run_key=f"ingest:{c[0]}..{c[-1]}:{len(c)}", tags=range_tags(c)) for c in in_chunks(new, cfg.batch.cases_per_run)]
    requests += [dg.RunRequest(run_key=f"retry:{case}:{fp}", partition_key=case) for case, fp in retries]
    if not requests:
        return dg.SkipReason(f"no new cases ({len(known)} registered)")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[cases_partitions.build_add_request(new)] if new else [],
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
    if result.out_of_time:
        context.log.info(f"took {len(result.rows) + len(result.recovered)} inbox entries in submissions.max_tick_seconds={cfg.submissions.max_tick_seconds:g}; the rest wait for the next tick")
    # Every accepted submission whose run was never launched, oldest first and at most max_per_tick: this
    # tick's, and any that a tick which died after recording them left behind. Run keys make a repeat a no-op.
    accepted = accepted_submissions(cat)
    launched = _launched_keys(context.instance, "submission:")
    rows = () if accepted.empty else accepted.sort_values(["submitted_at", "sha256"]).itertuples()
    # a row whose file a dying tick left in the inbox is requested once the file is in the store
    keys = [(submission_run_key(r.case_id, r.sha256), r.case_id) for r in rows if not r.stored_path or Path(r.stored_path).exists()]
    keys = [(k, c) for k, c in dict(keys).items() if k not in launched][: cfg.submissions.max_per_tick]
    requests = [dg.RunRequest(run_key=k, partition_key=c) for k, c in keys]
    cursor = json.dumps(list(result.cursor)) if result.cursor else context.cursor
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _round_runs(instance: dg.DagsterInstance, round_index: int) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={ROUND_TAG: str(round_index)})))


def _round_request(instance: dg.DagsterInstance, round_index: int, max_attempts: int):
    """A RunRequest for round ``round_index`` unless one is in flight, succeeded, or the attempts are spent."""
    runs = _round_runs(instance, round_index)
    unfinished = instance.get_runs(filters=dg.RunsFilter(job_name=round_job.name, statuses=list(IN_PROGRESS)), limit=1)
    if unfinished or any(r.status in IN_PROGRESS for r in runs):
        return dg.SkipReason(f"round {round_index}: a round run is in progress")
    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
        return dg.SkipReason(f"round {round_index}: its run succeeded; waiting for its state to advance")
    if len(runs) >= max_attempts:
        return dg.SkipReason(f"round {round_index}: {len(runs)} attempts failed (rounds.max_attempts={max_attempts}); fix the cause and launch round_job")
    keys = instance.get_dynamic_partitions(cases_partitions.name)
    tags = {**range_tags(keys), ROUND_TAG: str(round_index)}
    return dg.RunRequest(run_key=round_run_key(round_index, len(runs) + 1), tags=tags)


@dg.sensor(job=round_job, minimum_interval_seconds=60, description="When a round is answered or closed (or times out), launches the next round (fine-tune, re-predict, re-rank); relaunches a round whose run failed.")
def round_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource, catalog: CatalogResource):
    cfg, cat = campaign.config(), catalog.catalog()
    rec = latest_round(cat)
    if rec is None:
        return dg.SkipReason("no round has started yet: launch round_job (or alqa round)")
    if rec.converged:
        return dg.SkipReason(f"campaign converged in round {rec.round_index}: {rec.reason}")
    if rec.state in IN_FLIGHT:
        return _round_request(context.instance, rec.round_index, cfg.rounds.max_attempts)
    if rec.state == "queued":
        timeout = cfg.rounds.timeout_hours
        queued_at = rec.entered_at.get("queued")
        if timeout is not None and queued_at and (datetime.now(timezone.utc) - datetime.fromisoformat(queued_at)).total_seconds() > timeout * 3600:
            rec = close_round(cat, f"timed out after {timeout:g} h")
            context.log.info(f"round {rec.round_index} closed: {rec.reason}")
        else:
            s = round_state(cat)
            return dg.SkipReason(f"round {s.round_index}: waiting for {len(s.pending)} of {len(s.queue)} queued cases")
    waiting = awaiting_reassembly(cat, rec.round_index)
    if waiting:
        return dg.SkipReason(f"round {rec.round_index}: {len(waiting)} accepted submissions not reassembled yet")
    return _round_request(context.instance, rec.round_index + 1, cfg.rounds.max_attempts)
