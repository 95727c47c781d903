#!/usr/bin/env bash
# Data versions (DVC): ./tasks/data.sh list | verify [NAME ...] | add NAME --from BASE --images DIR | pull NAME | push NAME
#   add NAME --from BASE --csv FILE        labelled images from a CSV (path,label[,replaces])
#   add v1 --official fashion_mnist        the official release, as downloaded and verified
# A new version is immutable; commit its data/versions/NAME.dvc record, which holds every file's sha256.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
exec "$VENV_PYTHON" -m curation.data_versions "$@"
