"""Real servers for the production profile: PostgreSQL and Redis on 127.0.0.1, started here; and a PACS (Orthanc).

The session fixture ``services`` starts a throwaway PostgreSQL cluster and a
redis-server through ``scripts/services.sh`` (the same script a developer uses)
and stops them when the session ends; ``orthanc`` does the same for Orthanc
with its DICOMweb plugin. Without the server binaries or the
production extra the tests skip, except on CI (``CI`` set), where they fail:
CI must run them (``bash scripts/test.sh`` installs the servers first).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO / "scripts" / "services.sh"
PRODUCTION_YAML = REPO / "deploy" / "production" / "dagster.yaml"
CELERY_YAML = REPO / "deploy" / "production" / "celery.yaml"
WORKSPACE_YAML = REPO / "workspace.yaml"
VENV_BIN = Path(sys.executable).parent


def _unavailable(reason: str):
    if os.environ.get("ALQA_REQUIRE_SERVICES") or os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the integration tests (bash scripts/test.sh installs what they need)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> dict[str, str]:
    """PostgreSQL + Redis on 127.0.0.1 for the whole session; the variables deploy/production reads."""
    for module in ("dagster_postgres", "dagster_celery", "redis", "psycopg2"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"python package {module} missing: pip install -e '.[production]'")
    check = subprocess.run(["bash", str(SERVICES_SH), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        _unavailable(f"{check.stdout.strip()} (bash scripts/services.sh install)")
    state = tmp_path_factory.mktemp("services")
    started = subprocess.run(["bash", str(SERVICES_SH), "start", str(state)], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        env = dict(line.split("=", 1) for line in (state / "services.env").read_text().splitlines() if "=" in line)
        yield {k: v for k, v in env.items() if not k.startswith("ALQA_SERVICES_")}
    finally:
        subprocess.run(["bash", str(SERVICES_SH), "stop", str(state)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> dict[str, str]:
    """Orthanc + DICOMweb on 127.0.0.1 for the whole session: ALQA_ORTHANC_URL and ALQA_ORTHANC_DICOMWEB."""
    for module in ("highdicom", "dicomweb_client"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"python package {module} missing: pip install -e .")
    check = subprocess.run(["bash", str(SERVICES_SH), "check-orthanc"], capture_output=True, text=True)
    if check.returncode != 0:
        _unavailable(f"{check.stdout.strip()} (bash scripts/services.sh install)")
    state = tmp_path_factory.mktemp("orthanc")
    started = subprocess.run(["bash", str(SERVICES_SH), "start-orthanc", str(state)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield dict(line.split("=", 1) for line in (state / "orthanc.env").read_text().splitlines() if "=" in line)
    finally:
        subprocess.run(["bash", str(SERVICES_SH), "stop-orthanc", str(state)], capture_output=True, timeout=120)


def process_env(services: dict[str, str], dagster_home: Path, campaign: Path, **extra: str) -> dict[str, str]:
    """The environment every Dagster process of a deployment shares (webserver, daemon, workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALQA_", "DAGSTER_"))}
    env.update(services)
    env.update(
        DAGSTER_HOME=str(dagster_home),
        ALQA_CAMPAIGN=str(campaign),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `celery` is spawned by name
        OMP_NUM_THREADS="1",  # 2-core CI; and the same thread count as the embedded comparison
    )
    env.update(extra)
    return env


class Background:
    """A server-like process (worker, daemon) in its own session: stop() ends it and its children, and only them."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.log = args, log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def send(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group this Popen created (start_new_session)
        except ProcessLookupError:
            pass

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        self.send(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        # children that outlived the leader (a worker's pool, the daemon's code server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if sig == signal.SIGKILL else 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._fh.close()


def stop_all(processes, sig: int = signal.SIGTERM) -> None:
    """Signal every process first, then wait for each: their shutdowns overlap."""
    for bg in processes:
        bg.send(sig)
    for bg in processes:
        bg.stop(sig)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, *logs: Background, every_s: float = 1.0):
    """Poll ``predicate`` until it returns something truthy; fail with the processes' log tails."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for bg in logs:
            if bg.proc.poll() is not None:
                raise AssertionError(f"{what}: {bg.args[0]} exited with {bg.proc.returncode}\n{bg.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {bg.log.name}\n{bg.tail()}" for bg in logs)
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{tails}")
        time.sleep(every_s)


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done
