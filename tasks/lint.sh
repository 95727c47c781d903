#!/usr/bin/env bash
# Lint and type-check: ruff (rules and formatting) on everything, mypy (strict) on every package.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check .
"$ROOT/.venv/bin/mypy"
echo "lint: ruff and mypy clean"
