#!/usr/bin/env bash
# Review feedback before it becomes training data (corrections and conflicting labels wait for a review):
#   ./tasks/review_feedback.sh list [--all] [--sheet FILE]
#   ./tasks/review_feedback.sh accept ID [ID ...] [--category C]
#   ./tasks/review_feedback.sh reject ID [ID ...]
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
exec "$VENV_PYTHON" -m curation.review_feedback "$@"
