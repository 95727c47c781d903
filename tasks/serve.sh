#!/usr/bin/env bash
# Start the prediction service and web page: ./tasks/serve.sh [--host H] [--port P] [--workers N] [--model PATH]
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m api.serve "$@"
