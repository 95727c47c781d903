#!/usr/bin/env bash
# Build the team environment (.venv, from Pipfile.lock, dev tools included). Idempotent: when the
# environment already matches the lock it returns in about a second.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
cd "$ROOT"

stamp=.venv/.installed-from-lock
# The lock, the project's own packaging (its packages and commands, installed editable) and where torch
# comes from.
wanted="$( (cat Pipfile.lock pyproject.toml; echo "torch from: ${TORCH_INDEX_URL:-the lock}") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$VENV_PYTHON" -c 'import text_recognizer, training, release, curation, api, torch' 2>/dev/null; then
  echo "setup: environment up to date (.venv matches Pipfile.lock and pyproject.toml)" >&2
  exit 0
fi

# A CPU build of torch satisfies the lock's `torch==X` pin as far as pip is concerned (and the CUDA stack
# would stay behind the other way): a change of torch's source rebuilds .venv from nothing.
torch_from="${TORCH_INDEX_URL:-the lock}"
if [ -d .venv ] && [ "$(cat .venv/.torch-from 2>/dev/null || echo 'the lock')" != "$torch_from" ]; then
  echo "setup: torch's source changed to $torch_from; rebuilding .venv" >&2
  rm -rf .venv
fi

# pipenv itself lives in its own small virtual environment, pinned, so no system Python is modified.
if [ ! -x .tools/bin/pipenv ]; then
  echo "setup: installing pipenv $PIPENV_VERSION_PIN into .tools/" >&2
  python3 -m venv .tools
  .tools/bin/python -m pip install --quiet "pipenv==$PIPENV_VERSION_PIN"
fi
# torch's CUDA build makes .venv about 6.6 GB, and pip unpacks wheels under TMPDIR first: a full disk
# would otherwise surface only as pipenv's bare "Package installation failed".
free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
for place in "$ROOT" "${TMPDIR:-/tmp}"; do
  if [ ! -d .venv/lib ] && [ "$(free_gb "$place")" -lt "$SETUP_FREE_GB" ]; then
    echo "setup: only $(free_gb "$place") GB free under $place; building .venv needs about $SETUP_FREE_GB GB" >&2
    exit 1
  fi
done
# TORCH_INDEX_URL (as for the Docker image): torch and torchvision from that index, e.g. a CPU-only build
# far smaller than the locked CUDA one; every other package from the lock, hash-checked, without pipenv.
sync_with_torch_from_index() {
  local requirements
  requirements="$(mktemp)"
  python3 tasks/lock_requirements.py without-torch > "$requirements"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC2046  # two pins, split on purpose
  .venv/bin/python -m pip install --quiet --index-url "$TORCH_INDEX_URL" --extra-index-url "$PIP_INDEX_URL" \
    $(python3 tasks/lock_requirements.py torch) \
    && .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r "$requirements" \
    && .venv/bin/python -m pip install --quiet --no-deps --editable .
  local status=$?
  rm -f "$requirements"
  return $status
}
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  echo "setup: torch and torchvision from TORCH_INDEX_URL, every other package from Pipfile.lock" >&2
  sync=sync_with_torch_from_index
else
  echo "setup: syncing .venv with Pipfile.lock (a few minutes the first time, seconds after)" >&2
  sync=".tools/bin/pipenv sync --dev"
fi
if ! $sync; then
  echo "setup: installing failed; free space: $(free_gb "$ROOT") GB under $ROOT, $(free_gb "${TMPDIR:-/tmp}") GB under ${TMPDIR:-/tmp}" >&2
  exit 1
fi
echo "$torch_from" > .venv/.torch-from
echo "$wanted" > "$stamp"
echo "setup: done; python is $VENV_PYTHON" >&2
