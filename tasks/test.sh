#!/usr/bin/env bash
# Run the whole test suite, slow tests included: ./tasks/test.sh [pytest args]
# ./tasks/test.sh -m "not slow and not data" is the quick loop (no dataset, no network). The rest need
# the Fashion-MNIST files (FASHION_MNIST_MIRROR when set, else downloaded from the official URLs into
# data/raw/) and the shop photo export (SHOP_PHOTOS_MIRROR).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
# Two processes (pytest-xdist), each taking whole test files, so a module's fixtures (a smoke run, a live
# server) are built once: the full suite took 543 s against 855 s in one process, measured here on 2 cores.
# TEST_WORKERS=0 runs everything in this process (for -x, --pdb or print debugging).
exec "$VENV_PYTHON" -m pytest -m "slow or not slow" -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
