#!/usr/bin/env bash
# Re-run a finished run from its recorded config and compare: ./tasks/reproduce.sh RUN_DIR [--runs-dir DIR]
# Exits 0 when the best checkpoint is byte-identical, 1 when it differs (the report says how and why).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m release.reproduce "$@"
