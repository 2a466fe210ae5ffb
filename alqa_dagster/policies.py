"""How assets are partitioned and where their steps run: shared by the asset modules of every stage."""

from typing import Iterator, Sequence

import dagster as dg

#: The dynamic partitions every per-case asset shares: one per case id.
cases_partitions = dg.DynamicPartitionsDefinition(name="cases")

#: A backfill of per-case assets is one run over the whole partition range, so each
#: model loads once per backfill; `dagster asset materialize --partition-range`
#: accepts only this policy.
CASE_BATCHES = dg.BackfillPolicy.single_run()


def in_chunks(keys: Sequence[str], size: int) -> Iterator[list[str]]:
    """``keys`` in runs of at most ``size`` (``batch.cases_per_run``): a step that keeps per-case results
    (heatmaps, label maps) holds one chunk of them at a time, not the whole run's."""
    keys, size = list(keys), max(1, int(size))
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


#: Steps that want the accelerator: one at a time in the `gpu` pool, and the
#: `gpu` Celery queue in the production profile.
GPU_TAGS = {"alqa/device": "gpu", "dagster-celery/queue": "gpu"}
