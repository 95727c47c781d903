#!/usr/bin/env bash
# Open the MLflow UI on the tracking store: ./tasks/mlflow_ui.sh [--port 5000]
# The store is MLFLOW_TRACKING_URI, else the project's local store (mlruns/mlflow.db).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
store="${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/mlruns/mlflow.db}"
exec "$ROOT/.venv/bin/mlflow" ui --backend-store-uri "$store" --host 127.0.0.1 "$@"
