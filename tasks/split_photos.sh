#!/usr/bin/env bash
# Re-record the shop photos' train/val/test splits: ./tasks/split_photos.sh [--mirror DIR_OR_URL] [--seed 0]
# Writes data/splits/shop_photos.csv (commit it). Changing it changes every version made from the photos.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
exec "$VENV_PYTHON" -m text_recognizer.datasets.photo_splits "$@"
