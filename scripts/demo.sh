#!/usr/bin/env bash
# The README's main command: set everything up, then run alqa's demo on the
# embedded default (phantom campaign, local workspace, sqlite Dagster instance).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/alqa demo "$@"
