"""The deployment profiles as files: each validates against the schema of the library that reads it.

Fast (no servers): the production instance config (dagster + dagster-postgres),
the Celery config both workers and executor read (dagster-celery), the executor
that ALQA_EXECUTOR selects, and the Kubernetes example (dagster-k8s, when the k8s
extra is installed; it is an example and not run here).
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from .conftest import CELERY_YAML, PRODUCTION_YAML, REPO

PG_ENV = {"DAGSTER_PG_HOST": "db.example", "DAGSTER_PG_PORT": "6543", "DAGSTER_PG_USER": "alqa", "DAGSTER_PG_PASSWORD": "s3cret", "DAGSTER_PG_DB": "alqa_dagster"}
BROKER = {"ALQA_CELERY_BROKER": "redis://127.0.0.1:6379/0", "ALQA_CELERY_BACKEND": "redis://127.0.0.1:6379/1"}


def _instance_config(tmp_path, source, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    shutil.copyfile(source, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    return config


def test_production_instance_puts_runs_events_and_schedules_on_postgres(tmp_path, monkeypatch):
    pytest.importorskip("dagster_postgres", reason="the production extra: pip install -e '.[production]'")
    import dagster as dg
    from dagster._config import post_process_config
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    config = _instance_config(tmp_path, PRODUCTION_YAML, monkeypatch)
    storage = config["storage"]["postgres"]
    # the connection dagster-postgres builds, its {env: ...} values resolved as a daemon would
    resolved = post_process_config(dg.Field(DagsterPostgresStorage.config_type()).config_type, storage).value
    url = pg_url_from_config(resolved)
    assert url.startswith("postgresql+psycopg2://alqa:s3cret@db.example:6543/alqa_dagster"), url
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}


def test_embedded_default_is_sqlite_and_local(tmp_path, monkeypatch):
    config = _instance_config(tmp_path, REPO / "dagster.yaml", monkeypatch)
    assert "storage" not in config and config["run_launcher"]["class"] == "DefaultRunLauncher"


def test_one_celery_file_configures_workers_and_executor(monkeypatch):
    pytest.importorskip("dagster_celery", reason="the production extra: pip install -e '.[production]'")
    from dagster_celery.cli import get_validated_config

    for k, v in BROKER.items():
        monkeypatch.setenv(k, v)
    # what `dagster-celery worker start -y deploy/production/celery.yaml` reads
    worker = get_validated_config(str(CELERY_YAML))
    assert (worker["broker"], worker["backend"]) == (BROKER["ALQA_CELERY_BROKER"], BROKER["ALQA_CELERY_BACKEND"])
    assert worker["config_source"]["worker_prefetch_multiplier"] == 1

    # and what the code location's executor is, with ALQA_EXECUTOR=celery
    from alqa_dagster.definitions import defs

    monkeypatch.setenv("ALQA_EXECUTOR", "celery")
    job = defs().resolve_job_def("round_job")
    assert job.executor_def.name == "celery"
    queues = {name: node.tags.get("dagster-celery/queue", "default") for name, node in job.graph.node_dict.items()}
    assert {n for n, q in queues.items() if q == "gpu"} == {"model_checkpoints", "soft_predictions"}
    assert queues["attention_maps"] == queues["priority_list"] == "default"


@pytest.mark.parametrize(("value", "executor"), [("", "multi_or_in_process_executor"), ("multiprocess", "multi_or_in_process_executor"), ("in_process", "in_process")])
def test_alqa_executor_selects_the_executor_without_code_changes(monkeypatch, value, executor):
    from alqa_dagster.definitions import defs

    monkeypatch.setenv("ALQA_EXECUTOR", value)
    assert defs().resolve_job_def("round_job").executor_def.name == executor


def test_unknown_executor_is_refused_by_name(monkeypatch):
    from alqa_dagster.definitions import executor_from_env

    monkeypatch.setenv("ALQA_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="ALQA_EXECUTOR='spark'"):
        executor_from_env()


def test_celery_config_without_execution_block_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("dagster_celery", reason="the production extra: pip install -e '.[production]'")
    from alqa_dagster.definitions import executor_from_env

    bad = tmp_path / "celery.yaml"
    bad.write_text("broker: redis://127.0.0.1:6379/0\n")
    monkeypatch.setenv("ALQA_EXECUTOR", "celery")
    monkeypatch.setenv("ALQA_CELERY_CONFIG", str(bad))
    with pytest.raises(ValueError, match=f"{bad}: expected an `execution: config:` block"):
        executor_from_env()


def test_kubernetes_example_matches_dagster_k8s(tmp_path, monkeypatch):
    # an example, not a deployment: checked only where the k8s extra is installed
    pytest.importorskip("dagster_k8s", reason="the k8s example is checked with the k8s extra: pip install -e '.[k8s]'")
    from dagster._config import validate_config
    from dagster_k8s import K8sRunLauncher, k8s_job_executor

    config = _instance_config(tmp_path, REPO / "deploy" / "k8s" / "dagster.yaml", monkeypatch)
    launcher = validate_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    block = yaml.safe_load((REPO / "deploy" / "k8s" / "executor.yaml").read_text())["execution"]["config"]
    executor = validate_config(k8s_job_executor.config_schema.config_type, block)
    assert executor.success, executor.errors
    for step in ("model_checkpoints", "soft_predictions"):
        assert block["per_step_k8s_config"][step]["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
