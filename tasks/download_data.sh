#!/usr/bin/env bash
# Fetch and verify Fashion-MNIST into data/raw/: ./tasks/download_data.sh [--mirror DIR_OR_URL] [--dest DIR]
# The mirror can also come from FASHION_MNIST_MIRROR (a directory, file:// or http(s) URL).
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m text_recognizer.datasets.download "$@"
