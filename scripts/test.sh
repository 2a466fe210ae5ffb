#!/usr/bin/env bash
# The README's test command: set everything up, then run the whole test suite
# (slow tests and the PostgreSQL/Celery integration tests included). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PostgreSQL + Redis + Orthanc (a PACS with DICOMweb) for tests/integration, and headless Chromium with
# its driver for the alqa serve worklist test (apt-get, when missing;
# the tests start and stop their own throwaway servers on 127.0.0.1). Without them those tests
# skip, or fail on CI.
bash scripts/services.sh install || echo "alqa test: continuing without postgresql/redis-server/orthanc/chromium (tests needing them skip; on CI they fail)" >&2
export DAGSTER_HOME="${DAGSTER_HOME:-$(mktemp -d)}"
exec .venv/bin/python -m pytest --run-slow -q "$@"
