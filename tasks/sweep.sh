#!/usr/bin/env bash
# Hyperparameter search: ./tasks/sweep.sh training/sweeps/NAME.yaml [--sweeps-dir DIR]
# Every trial is a normal run directory; the leaderboard (by validation loss) goes to sweeps/<time>-<name>/.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m training.sweep "$@"
