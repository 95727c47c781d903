#!/usr/bin/env bash
# The DVC pipeline in dvc.yaml (download -> train -> evaluate): ./tasks/pipeline.sh [dvc repro args]
# Re-runs only the stages whose inputs changed; the config it trains is set in params.yaml.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
exec dvc repro "$@"
