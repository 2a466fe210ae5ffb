"""The sensors: new (and fixed) cases, annotator submissions, and the round loop (the jobs they launch: :mod:`.jobs`)."""

import json
from pathlib import Path

import dagster as dg

from alqa_core.annotation.intake.process import process_inbox
from alqa_core.annotation.labelled.rounds import accepted_submissions, close_round, what_next
from alqa_core.case_errors import fixed_cases
from alqa_core.ingest.cases import index_campaign
from alqa_core.rounds import current_round
from alqa_dagster.defs.jobs import ROUND_ASSETS  # noqa: F401 (the round's assets, where the sensors' users look for them)
from alqa_dagster.defs.jobs import ROUND_TAG, ingest_job, range_tags, revision_job, round_in_progress, round_job, round_run_key, round_runs, submission_run_key
from alqa_dagster.policies import cases_partitions, in_chunks
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource


def _launched_keys(instance: dg.DagsterInstance, prefix: str) -> set[str]:
    """Every run_key starting with ``prefix`` that has a run: one query per tick, not one per submission."""
    return {v for _, values in instance.get_run_tags(tag_keys=["dagster/run_key"], value_prefix=prefix) for v in values}


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, description="Registers new cases found in the datasets and ingests them in batched runs of batch.cases_per_run cases; retries a refused case once its file changed.")
def new_cases_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource, catalog: CatalogResource):
    cfg = campaign.config()
    found = index_campaign(cfg).cases
    known = set(context.instance.get_dynamic_partitions(cases_partitions.name))
    new = sorted(c for c in found if c not in known)
    retries = fixed_cases(catalog.catalog(), found)
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
def submissions_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource):
    cfg, layout, cat = workspace.open()
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


def _round_request(instance: dg.DagsterInstance, round_index: int, max_attempts: int):
    """A RunRequest for round ``round_index`` unless one is in flight, succeeded, or the attempts are spent."""
    runs = round_runs(instance, round_index)
    if round_in_progress(instance, runs):
        return dg.SkipReason(f"round {round_index}: a round run is in progress")
    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
        return dg.SkipReason(f"round {round_index}: its run succeeded; waiting for its state to advance")
    if len(runs) >= max_attempts:
        return dg.SkipReason(f"round {round_index}: {len(runs)} attempts failed (rounds.max_attempts={max_attempts}); fix the cause and launch round_job")
    keys = instance.get_dynamic_partitions(cases_partitions.name)
    tags = {**range_tags(keys), ROUND_TAG: str(round_index)}
    return dg.RunRequest(run_key=round_run_key(round_index, len(runs) + 1), tags=tags)


@dg.sensor(job=round_job, minimum_interval_seconds=60, description="Asks the round state machine what comes next: when a round is answered or closed (or times out), launches the next round (fine-tune, re-predict, re-rank); relaunches a round whose run failed.")
def round_sensor(context: dg.SensorEvaluationContext, campaign: CampaignResource, catalog: CatalogResource):
    cfg, cat = campaign.config(), catalog.catalog()
    decision = what_next(cat, cfg.rounds.timeout_hours)
    if decision.close is not None:
        rec = close_round(cat, decision.close_reason)
        context.log.info(f"round {rec.round_index} closed: {rec.reason}")
    if decision.run is None or decision.by_hand:
        return dg.SkipReason(decision.reason)
    return _round_request(context.instance, decision.run, cfg.rounds.max_attempts)
