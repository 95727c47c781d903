#!/usr/bin/env bash
# List finished runs: ./tasks/experiments.sh [--runs-dir runs] [--sort COLUMN] [--descending] [--json]
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m release.experiments "$@"
