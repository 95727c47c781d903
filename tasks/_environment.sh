# Sourced by every task script: one place for where the environment lives and how it is built.
# The package index comes from PIP_INDEX_URL when set, else from pip's own default, so that no
# registry host is written into this repository.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PYTHON="$ROOT/.venv/bin/python"
PIPENV_VERSION_PIN="2026.10.3"
SETUP_FREE_GB="${SETUP_FREE_GB:-10}"  # disk a first build of .venv needs (torch CUDA build + unpacking)
export PIPENV_VENV_IN_PROJECT=1 PIPENV_YES=1 PIPENV_NOSPIN=1 PIPENV_VERBOSITY=-1
export PIPENV_PIPFILE="$ROOT/Pipfile"
if [ -z "${PIP_INDEX_URL:-}" ]; then
  PIP_INDEX_URL="$(python3 -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')"
  export PIP_INDEX_URL
fi
