#!/usr/bin/env bash
# Set up alqa in ./.venv: torch first (pinned; a CPU build lies on disk on the
# project's machines, elsewhere pip fetches it), then alqa and its dependencies,
# including the production profile's Python packages (the `production` extra).
# The PostgreSQL and Redis servers are system packages: scripts/services.sh install.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "alqa setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "alqa setup: installing torch==2.13.0"
  "${PIP[@]}" install "torch==2.13.0"
fi
echo "alqa setup: installing alqa and its dependencies (with the production profile's dagster-postgres, dagster-celery)"
"${PIP[@]}" install -e ".[dev,production]"
# MONAI Label's client, for the alqa serve tests: without its dependencies (its metadata pulls MONAI
# Label's whole server stack; the client needs only requests, which dagster brings)
"${PIP[@]}" install --no-deps "monailabel==0.8.5"
.venv/bin/python -c "import alqa_core, alqa_dagster, torch, monai, dagster, dagster_postgres, dagster_celery; print('alqa setup: ok (torch', torch.__version__, '| monai', monai.__version__, '| dagster', dagster.__version__ + ')')"
