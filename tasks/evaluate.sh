#!/usr/bin/env bash
# Evaluate a model or a run: ./tasks/evaluate.sh MODEL_OR_RUN_DIR [--split test|val] [--output DIR]
# Prints per-class metrics; writes metrics.json and PNG plots (confusion, reliability, confident mistakes).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m release.evaluate "$@"
