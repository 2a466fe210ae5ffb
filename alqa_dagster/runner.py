"""Run alqa's assets in-process against a real Dagster instance (CLI and demo).

Runs land in the instance (``$DAGSTER_HOME``) exactly as UI-launched ones do,
so ``dagster dev`` later shows their lineage, metadata and previews.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import dagster as dg

from alqa_dagster.definitions import PROJECT_ROOT, defs

CASES = "cases"


def ensure_dagster_home(home: Path | None = None) -> Path:
    """Use ``$DAGSTER_HOME`` (default ``./.dagster_home``) with the project's embedded dagster.yaml."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


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
    d = defs()
    run_tags = dict(tags or {})
    if partition_range is not None:
        run_tags["dagster/asset_partition_range_start"], run_tags["dagster/asset_partition_range_end"] = partition_range
    run_config = run_config or dg.RunConfig()
    if not run_config.loggers:
        # a quiet console: the CLI shows its own progress; the UI keeps every event
        run_config = dg.RunConfig(ops=run_config.ops, resources=run_config.resources, loggers={"console": {"config": {"log_level": os.environ.get("ALQA_LOG_LEVEL", "WARNING")}}}, execution=run_config.execution)
    result = dg.materialize(
        list(d.assets or []) + list(d.asset_checks or []),
        selection=list(selection),
        instance=instance,
        resources=dict(d.resources or {}),
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
