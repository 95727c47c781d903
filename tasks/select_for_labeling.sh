#!/usr/bin/env bash
# Queue the images the model is least sure about for labelling:
#   ./tasks/select_for_labeling.sh --pool DIR --n K [--model M] [--by margin|entropy] [--out DIR]
# Writes queue.csv (fill in `label`, then ./tasks/data.sh add NAME --from BASE --csv queue.csv) and contact_sheet.png.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m curation.select_for_labeling "$@"
