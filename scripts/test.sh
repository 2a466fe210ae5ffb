#!/usr/bin/env bash
# The README's test command: set everything up, then run the whole test suite
# (slow tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$(mktemp -d)}"
exec .venv/bin/python -m pytest --run-slow -q "$@"
