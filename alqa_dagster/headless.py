"""The headless commands (``alqa ingest``, ``alqa round``, ``alqa reassemble``): Dagster runs in the instance, in chunks, with a progress bar.

Every run lands in ``$DAGSTER_HOME`` (default ``./.dagster_home``) exactly as a
UI-launched one does, so ``dagster dev`` shows them later. Per-case steps run
in chunks of ``chunk`` partitions (one Dagster run each, models loaded once
per chunk), so memory is bounded by a chunk, not by the campaign. The assets
of each run are the jobs' (:mod:`alqa_dagster.defs.jobs`), the cases to
ingest again follow the new-cases sensor's rule, and ``alqa round`` does what
the round state machine decides, as the round sensor does.
"""

from __future__ import annotations

from typing import Sequence

from tqdm import tqdm

from alqa_core.annotation.labelled.rounds import close_round, what_next
from alqa_core.case_errors import INGEST_STAGES, case_counts, failed_cases, fixed_cases, open_case_errors
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.ingest.cases import index_campaign
from alqa_core.workspace import WorkspaceLayout


def _chunks(keys: Sequence[str], all_keys: Sequence[str], chunk: int) -> list[tuple[str, str]]:
    """Contiguous partition ranges (in the instance's partition order) covering ``keys``, at most ``chunk`` each."""
    position = {k: i for i, k in enumerate(all_keys)}
    ordered = sorted(keys, key=position.__getitem__)
    out, run = [], []
    for k in ordered:
        if run and (len(run) == chunk or position[k] != position[run[-1]] + 1):
            out.append((run[0], run[-1]))
            run = []
        run.append(k)
    if run:
        out.append((run[0], run[-1]))
    return out


def _over_chunks(instance, selection, keys, all_keys, chunk: int, what: str, tags: dict | None = None) -> None:
    from alqa_dagster.runner import materialize

    ranges = _chunks(keys, all_keys, max(1, chunk))
    position = {k: i for i, k in enumerate(all_keys)}
    with tqdm(total=len(keys), desc=what, unit="case") as bar:
        for first, last in ranges:
            materialize(instance, selection, (first, last), tags=tags)
            bar.update(position[last] - position[first] + 1)


def ingest(config: CampaignConfig, layout: WorkspaceLayout, chunk: int = 50) -> int:
    """Register the campaign's new cases and ingest them, plus every refused case whose file changed since."""
    import dagster as dg

    from alqa_dagster.defs.jobs import INGEST_ASSETS
    from alqa_dagster.runner import ensure_dagster_home, register_cases

    ensure_dagster_home()
    index = index_campaign(config)
    with dg.DagsterInstance.get() as instance:
        new = register_cases(instance, sorted(index.cases))
        fixed = [case for case, _ in fixed_cases(Catalog(layout.catalog), index.cases)]
        todo = sorted(set(new) | set(fixed))
        print(f"{len(new)} new case(s), {len(fixed)} refused case(s) with a changed file; {len(todo)} to ingest")
        if todo:
            _over_chunks(instance, INGEST_ASSETS, todo, instance.get_dynamic_partitions("cases"), chunk, "ingest")
    catalog = Catalog(layout.catalog)
    counts = case_counts(catalog, index.cases)
    refused = set(counts.refused)
    for r in open_case_errors(catalog, INGEST_STAGES).itertuples():
        if r.case_id in refused:
            print(f"refused {r.case_id} [{r.stage}] {r.file}: {r.reason}")
    rest = f"; not ingested yet: {len(counts.not_tried)}" if counts.not_tried else ""
    print(f"cases found: {counts.found}; ingested: {len(counts.ingested)}; refused: {len(counts.refused)}{rest}")
    return 0


def run_round(layout: WorkspaceLayout, chunk: int = 50, config: CampaignConfig | None = None) -> int:
    """What the round state machine decides, as the round sensor does: close a timed-out round, then run the round it
    names (training once, per-case predictions/attention/reassembly in chunks, then ranking and the queue), or say
    why nothing runs. ``config`` gives ``rounds.timeout_hours`` (None: no timeout)."""
    import dagster as dg

    from alqa_core.annotation.labelled.status import campaign_status
    from alqa_dagster.defs.jobs import ROUND_CASES, ROUND_END, ROUND_START, ROUND_TAG, round_in_progress, round_runs
    from alqa_dagster.runner import ensure_dagster_home, materialize

    ensure_dagster_home()
    catalog = Catalog(layout.catalog)
    decision = what_next(catalog, config.rounds.timeout_hours if config is not None else None)
    if decision.close is not None:
        rec = close_round(catalog, decision.close_reason)
        print(f"round {rec.round_index} closed: {rec.reason}")
    if decision.run is None:
        print(decision.reason)
        return 0 if decision.done else 1
    with dg.DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions("cases")
        if not keys:
            raise RuntimeError("no cases are registered yet: run alqa ingest first")
        t = decision.run
        if round_in_progress(instance, round_runs(instance, t)):
            raise RuntimeError(f"round {t}: a round run is in progress in {instance.root_directory}; wait for it (the round sensor does)")
        tags = {ROUND_TAG: str(t)}
        print(f"round {t}: training ({decision.reason})")
        materialize(instance, ROUND_START, tags=tags)
        cases = [k for k in keys if k not in failed_cases(catalog)]
        _over_chunks(instance, ROUND_CASES, cases, keys, chunk, f"round {t}: predict, attention, reassemble", tags)
        print(f"round {t}: priority list, queue, evaluation")
        materialize(instance, ROUND_END, tags=tags)
    print(campaign_status(layout, config).render())
    return 0


def reassemble(layout: WorkspaceLayout, chunk: int = 50) -> int:
    """Every ingested case's revised label (from its accepted answers) and reassembled label, with the latest pseudo labels."""
    import dagster as dg

    from alqa_dagster.defs.jobs import REVISION_ASSETS
    from alqa_dagster.runner import ensure_dagster_home

    ensure_dagster_home()
    catalog = Catalog(layout.catalog)
    counts = case_counts(catalog)
    with dg.DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions("cases")
        ingested = set(counts.ingested)
        cases = [k for k in keys if k in ingested]
        _over_chunks(instance, REVISION_ASSETS, cases, keys, chunk, "reassemble")
    without = [c for c in counts.ingested if not layout.reassembled_label(c).exists()]
    unpredicted = failed_cases(catalog, ("soft_predictions",))
    why = ", ".join(f"{c} (refused at prediction)" if c in unpredicted else f"{c} (not predicted yet)" for c in without)
    print(counts.render())
    print(f"reassembled {len(counts.ingested) - len(without)} of {len(counts.ingested)} ingested cases ({len(without)} without a label"
          + (f": {why})" if without else ")"))
    return 0


def close(layout: WorkspaceLayout, reason: str) -> int:
    rec = close_round(Catalog(layout.catalog), reason)
    print(f"round {rec.round_index} closed: {rec.reason}; the round sensor (or alqa round) starts the next one")
    return 0
