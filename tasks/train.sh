#!/usr/bin/env bash
# Train a classifier: ./tasks/train.sh [--config training/configs/NAME.yaml] [--resume RUN_DIR] [key=value ...]
# (with --resume, only device= and num_threads= : where the run continues, e.g. a GPU run finished on the CPU)
# Downloads and verifies Fashion-MNIST first if needed; prints where the run directory and best checkpoint are.
#   --nproc N   train with N processes (PyTorch DDP via torchrun: gloo on CPU, NCCL on CUDA, one GPU each);
#               torchrun's multi-node options pass through: --nnodes, --node-rank, --rdzv-endpoint,
#               --rdzv-backend, --rdzv-id, --master-addr, --master-port, --max-restarts.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
"$ROOT/tasks/setup.sh"
nproc="" torchrun_args=() args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc) nproc="${2:?--nproc needs a number}"; shift 2 ;;
    --nproc=*) nproc="${1#*=}"; shift ;;
    --nnodes|--node-rank|--rdzv-endpoint|--rdzv-backend|--rdzv-id|--master-addr|--master-port|--max-restarts)
      torchrun_args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --nnodes=*|--node-rank=*|--rdzv-endpoint=*|--rdzv-backend=*|--rdzv-id=*|--master-addr=*|--master-port=*|--max-restarts=*)
      torchrun_args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$nproc" ]; then
  [ ${#torchrun_args[@]} -eq 0 ] || { echo "train.sh: ${torchrun_args[0]} needs --nproc N" >&2; exit 2; }
  exec "$VENV_PYTHON" -m training.cli "${args[@]}"
fi
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || { echo "train.sh: --nproc must be a positive whole number, got '$nproc'" >&2; exit 2; }
# One node and no rendezvous given: --standalone picks a free local port, so runs never collide.
[ ${#torchrun_args[@]} -gt 0 ] || torchrun_args=(--standalone)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # threads come from the config (num_threads: auto shares cores)
exec "$ROOT/.venv/bin/torchrun" --nproc-per-node "$nproc" "${torchrun_args[@]}" -m training.cli "${args[@]}"
