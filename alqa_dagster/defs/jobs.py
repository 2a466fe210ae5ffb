"""Which assets each kind of run materializes, as jobs, with the tags and run keys that name the runs.

The one place these are written: the jobs and sensors of :mod:`.automation`
and the headless commands (``alqa ingest``, ``round``, ``reassemble``,
:mod:`alqa_dagster.headless`) all use these lists, so a round launched from
the UI, by the round sensor or by ``alqa round`` materializes the same assets.
"""

from __future__ import annotations

import dagster as dg

#: a new (or fixed) case: its raw scan, original label and preprocessed volume
INGEST_ASSETS = ["raw_scans", "original_labels", "preprocessed_volumes"]
#: a round in three parts: once per round, per case (in chunks of cases), once per round again
ROUND_START = ["training_set", "model_checkpoints"]
ROUND_CASES = ["soft_predictions", "attention_maps", "reassembled_labels"]
ROUND_END = ["priority_list", "annotation_queue", "evaluation_report"]
ROUND_ASSETS = ROUND_START + ROUND_CASES + ROUND_END
#: an accepted submission (and ``alqa reassemble``): the case's revised label, then its reassembled label
REVISION_ASSETS = ["revised_labels", "reassembled_labels"]

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: the tag every round run carries: the round it works on (the round sensor's retries look it up)
ROUND_TAG = "alqa/round"
IN_PROGRESS = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_ASSETS,
    description="Ingest cases: raw scans, original labels, preprocessed volumes (batched over a partition range). "
    "A refused case is recorded in case_errors and the others go on.",
)
revision_job = dg.define_asset_job(
    "revision_job",
    selection=REVISION_ASSETS,
    description="An accepted submission: the case's revised label, then its reassembled label.",
)
reassemble_job = dg.define_asset_job(
    "reassemble_job",
    selection=REVISION_ASSETS,
    description="Every case's revised label (from its accepted answers) and reassembled label (original > revised > "
    "pseudo) with provenance: launch it over all case partitions for the labelled dataset as it stands (alqa reassemble).",
)
round_job = dg.define_asset_job(
    "round_job",
    selection=ROUND_ASSETS,
    description="One round: training set, (fine-)tuned checkpoints in the gpu pool, predictions and attention for "
    "every case (one batched run), every case's reassembled label, priority list, queue with work packages, "
    "evaluation. Launch it over all case partitions (a partition range).",
)


def range_tags(keys) -> dict:
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def submission_run_key(case_id: str, sha256: str) -> str:
    """The run_key of an accepted submission: its case and content (the same bytes for two cases are two runs)."""
    return f"submission:{case_id}:{sha256}"


def round_run_key(round_index: int, attempt: int) -> str:
    """The run_key of a round's run: the attempt, not the round, so a failed round can be launched again."""
    return f"round:{round_index}:{attempt}"


def round_runs(instance: dg.DagsterInstance, round_index: int) -> list[dg.DagsterRun]:
    """Every run that worked on round ``round_index`` (launched by the sensor, the UI or ``alqa round``: all carry ROUND_TAG)."""
    return list(instance.get_runs(filters=dg.RunsFilter(tags={ROUND_TAG: str(round_index)})))


def round_in_progress(instance: dg.DagsterInstance, runs) -> bool:
    """Is a round run still going: one of ``runs`` (a round's), or any run of round_job?"""
    unfinished = instance.get_runs(filters=dg.RunsFilter(job_name=round_job.name, statuses=list(IN_PROGRESS)), limit=1)
    return bool(unfinished) or any(r.status in IN_PROGRESS for r in runs)
