#!/usr/bin/env bash
# Train a classifier: ./tasks/train.sh [--config training/configs/NAME.yaml] [--resume RUN_DIR] [key=value ...]
# Downloads and verifies Fashion-MNIST first if needed; prints where the run directory and best checkpoint are.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m training.cli "$@"
