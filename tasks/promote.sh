#!/usr/bin/env bash
# Promote a finished run's best checkpoint to a new version in text_recognizer/weights/ (the served model),
# with a model card, switched to by one rename; --rollback serves the previous version again:
#   ./tasks/promote.sh RUN_DIR [--min-test-accuracy 0.94] [--max-size-mb 1.0] [--domain-floors ...]
#                      [--behaviour-bars ...] [--weights int8 [--computation int8]]   (all: --help)
#   ./tasks/promote.sh --rollback
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m release.promote "$@"
