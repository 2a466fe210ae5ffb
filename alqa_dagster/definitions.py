"""The code location: every definition under ``alqa_dagster/defs/`` is autoloaded.

The executor is deployment configuration, never code. ``ALQA_EXECUTOR`` picks it,
and must be the same for every process of a deployment (webserver, daemon, workers):

- unset or ``multiprocess``: Dagster's default (each step in its own process; run
  config ``execution: {config: {in_process: {}}}`` keeps them in one), the embedded profile;
- ``in_process``: every step in the run's process;
- ``celery``: dagster-celery, configured from the ``execution.config`` block of
  ``ALQA_CELERY_CONFIG`` (default ``deploy/production/celery.yaml``), the very file
  the workers get with ``dagster-celery worker start -y``; steps tagged
  ``dagster-celery/queue: gpu`` go to the ``gpu`` queue, the rest to the default one;
- ``k8s``: dagster-k8s's ``k8s_job_executor``, configured from ``ALQA_K8S_EXECUTOR_CONFIG``
  (default ``deploy/k8s/executor.yaml``; an example, not run here).
"""

import os
from pathlib import Path

import dagster as dg
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")

#: Dagster stores the per-case materializations of one step as one batch when its
#: ``DAGSTER_EVENT_BATCH_SIZE`` is set (read at every write): PostgreSQL writes a batch in one
#: INSERT. No-op per-case assets, 300 cases, measured here: 2.8 ms instead of 46 ms wall per
#: (asset, case); ``benchmarks/bench_scale.py --storage postgres`` prints the batched floor.
#: sqlite stores events one by one either way. Every process that runs steps (run
#: workers, Celery workers) imports this module, so the default reaches them; the
#: environment overrides it.
EVENT_BATCH_VAR = "DAGSTER_EVENT_BATCH_SIZE"
os.environ.setdefault(EVENT_BATCH_VAR, "1000")


def _execution_config(var: str, default: Path) -> dict:
    path = Path(os.environ.get(var) or default)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no executor config file ({var})")
    block = (yaml.safe_load(path.read_text()) or {}).get("execution", {}).get("config")
    if not isinstance(block, dict):
        raise ValueError(f"{path}: expected an `execution: config:` block ({var})")
    return block


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor ``ALQA_EXECUTOR`` names; None keeps Dagster's default."""
    name = os.environ.get("ALQA_EXECUTOR", "") or "multiprocess"
    if name == "multiprocess":
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise ImportError("ALQA_EXECUTOR=celery needs dagster-celery: pip install -e '.[production]'") from exc
        return celery_executor.configured(_execution_config("ALQA_CELERY_CONFIG", PROJECT_ROOT / "deploy" / "production" / "celery.yaml"), name="celery")
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError("ALQA_EXECUTOR=k8s needs dagster-k8s: pip install -e '.[k8s]'") from exc
        return k8s_job_executor.configured(_execution_config("ALQA_K8S_EXECUTOR_CONFIG", PROJECT_ROOT / "deploy" / "k8s" / "executor.yaml"), name="k8s")
    raise ValueError(f"ALQA_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    executor = executor_from_env()
    return loaded if executor is None else dg.Definitions.merge(loaded, dg.Definitions(executor=executor))
