"""Run alqa's assets in-process against a real Dagster instance (CLI and demo).

Runs land in the instance (``$DAGSTER_HOME``) exactly as UI-launched ones do,
so ``dagster dev`` later shows their lineage, metadata and previews.

A run over a range of case partitions records one "planned" event per asset
(``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``, set here unless the
environment says otherwise) instead of one per case and asset: on sqlite that
halved the per-case cost of a run (``benchmarks/bench_scale.py``). Dagster's
trade: the partitions of a run that FAILS show as missing, not failed (the
run itself shows failed; a refused case is in ``case_errors`` either way).
Set the same variable for ``dagster dev`` / the daemon to get it there too.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Sequence

import dagster as dg

from alqa_dagster.definitions import PROJECT_ROOT, defs

CASES = "cases"
PLANNED_EVENTS_VAR = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def ensure_dagster_home(home: Path | None = None) -> Path:
    """Use ``$DAGSTER_HOME`` (default ``./.dagster_home``) with the project's embedded dagster.yaml."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", target)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault(PLANNED_EVENTS_VAR, "1")
    return home


@functools.cache
def _definitions(env: tuple) -> tuple[list, dict]:
    """The code location's assets, checks and resources, loaded once per process (and per binding of the env)."""
    d = defs()
    return list(d.assets or []) + list(d.asset_checks or []), dict(d.resources or {})


def _env_key() -> tuple:
    # defs() binds these at load time (resources.py, definitions.py): reload when they change
    return tuple((v, os.environ.get(v)) for v in ("ALQA_WORKSPACE", "ALQA_DEVICE", "ALQA_EXECUTOR", "ALQA_CELERY_CONFIG", "ALQA_K8S_EXECUTOR_CONFIG"))


def register_cases(instance: dg.DagsterInstance, case_ids: Sequence[str]) -> list[str]:
    """Add the case ids that are not partitions yet; returns the new ones."""
    existing = set(instance.get_dynamic_partitions(CASES))
    new = [c for c in case_ids if c not in existing]
    if new:
        instance.add_dynamic_partitions(CASES, new)
    return new


def materialize(
    instance: dg.DagsterInstance,
    selection: Sequence[str],
    partition_range: tuple[str, str] | None = None,
    run_config: dg.RunConfig | None = None,
    tags: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize ``selection`` (asset names) in one run; per-case assets over ``partition_range``."""
    assets, resources = _definitions(_env_key())
    run_tags = dict(tags or {})
    if partition_range is not None:
        run_tags["dagster/asset_partition_range_start"], run_tags["dagster/asset_partition_range_end"] = partition_range
    run_config = run_config or dg.RunConfig()
    if not run_config.loggers:
        # a quiet console: the CLI shows its own progress; the UI keeps every event
        run_config = dg.RunConfig(ops=run_config.ops, resources=run_config.resources, loggers={"console": {"config": {"log_level": os.environ.get("ALQA_LOG_LEVEL", "WARNING")}}}, execution=run_config.execution)
    result = dg.materialize(
        assets,
        selection=list(selection),
        instance=instance,
        resources=resources,
        run_config=run_config,
        tags=run_tags,
        raise_on_error=False,
    )
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        detail = "; ".join(f"{e.step_key}: {e.event_specific_data.error.message.strip()}" for e in failures)
        raise RuntimeError(f"materializing {list(selection)} failed: {detail}")
    return result


def full_range(instance: dg.DagsterInstance) -> tuple[str, str]:
    """The first and last case partitions (a range follows the partitions' insertion order)."""
    keys = instance.get_dynamic_partitions(CASES)
    if not keys:
        raise RuntimeError("no cases are registered as partitions yet")
    return keys[0], keys[-1]
