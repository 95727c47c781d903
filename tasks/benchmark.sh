#!/usr/bin/env bash
# Run the benchmarks (not part of the tests): ./tasks/benchmark.sh [NAME ...] (default: all, in this order)
# Each prints a table and writes benchmarks/results/<name>.json with the machine description.
# time_to_accuracy trains the default config (~10 min) unless TIME_TO_ACCURACY_RUN names a finished run;
# preprocessing_variants trains a small CNN per photo conversion (~30 min; needs SHOP_PHOTOS_MIRROR).
# ensembles (not in the default list) compares the models ENSEMBLE_MODELS names (space-separated
# promoted artifacts or weights folders), alone and averaged, float32 and int8, on validation.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
cd "$ROOT"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(training_loop inference network_sizes single_request api_load serving_versus_commit hostile_load micro_batching distributed_training preprocessing_speed
  preprocessing_variants person_separation time_to_accuracy)
for name in "${names[@]}"; do
  if [ "$name" = time_to_accuracy ] && [ -n "${TIME_TO_ACCURACY_RUN:-}" ]; then
    "$VENV_PYTHON" -m benchmarks.time_to_accuracy --run "$TIME_TO_ACCURACY_RUN"
  elif [ "$name" = ensembles ]; then
    read -r -a models <<< "${ENSEMBLE_MODELS:?ensembles compares the models ENSEMBLE_MODELS names}"
    "$VENV_PYTHON" -m benchmarks.ensembles "${models[@]}"
  else
    "$VENV_PYTHON" -m "benchmarks.$name"
  fi
done
