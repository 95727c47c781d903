#!/usr/bin/env bash
# Run the whole test suite, slow tests included: ./tasks/test.sh [pytest args]
# ./tasks/test.sh -m "not slow and not data" is the quick loop (no dataset, no network). The rest need
# the Fashion-MNIST files (FASHION_MNIST_MIRROR when set, else downloaded from the official URLs into
# data/raw/) and the shop photo export (SHOP_PHOTOS_MIRROR).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
exec "$VENV_PYTHON" -m pytest -m "slow or not slow" "$@"
