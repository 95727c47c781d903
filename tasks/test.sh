#!/usr/bin/env bash
# Run the whole test suite, slow tests included: ./tasks/test.sh [pytest args]
# ./tasks/test.sh -m "not slow" is the quick loop. Tests need the Fashion-MNIST files: from
# FASHION_MNIST_MIRROR when set, else downloaded from the official URLs into data/raw/.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
exec "$VENV_PYTHON" -m pytest -m "slow or not slow" "$@"
