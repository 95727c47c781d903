#!/usr/bin/env bash
# Install the serving runtime into a fresh virtual environment: the package with its `serve` extra,
# versions constrained by Pipfile.lock. The Dockerfile's only install step; CI runs it too
# (tasks/check_runtime.sh), so the image's install is tested without a Docker engine.
#   tasks/install_runtime.sh VENV_DIR [SOURCE_DIR]
# TORCH_INDEX_URL, when set, is the index to take torch from (e.g. a CPU-only wheel index for the image).
set -euo pipefail
venv="${1:?usage: install_runtime.sh VENV_DIR [SOURCE_DIR]}"
source_dir="${2:-$(cd "$(dirname "$0")/.." && pwd)}"

python3 -m venv "$venv"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# Every locked package pinned, "+local" tags dropped so a CPU build of the same torch satisfies it.
python3 "$source_dir/tasks/lock_requirements.py" constraints "$source_dir/Pipfile.lock" > "$constraints"
torch_pin="$(grep '^torch==' "$constraints")"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$venv/bin/pip" install --quiet --no-cache-dir --index-url "$TORCH_INDEX_URL" "$torch_pin"
fi
"$venv/bin/pip" install --quiet --no-cache-dir --constraint "$constraints" "$source_dir[serve]"
echo "runtime installed in $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
