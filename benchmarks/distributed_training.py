"""Training throughput with 1 and 2 processes (DDP, gloo) on this machine, default network, same run.

    python -m benchmarks.distributed_training [--images 20000] [--epochs 2]

Setups, each a real training run through the CLI (torchrun for several processes), measured in turn:
1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread. Reported: images/second of the last
epoch (all processes together) and wall seconds per epoch.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import print_table, write_result
from training.config import CONFIGS_DIR

SETUPS = ((1, 1), (1, 2), (2, 1))  # (processes, threads per process)


def command(processes: int, threads: int, runs_dir: Path, images: int, epochs: int) -> list[str]:
    launcher = [sys.executable, "-m", "training.cli"]
    if processes > 1:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        launcher = [torchrun, "--standalone", "--nproc-per-node", str(processes), "-m", "training.cli"]
    return [*launcher, "--config", str(CONFIGS_DIR / "default.yaml"), f"runs_dir={runs_dir}", "device=cpu",
            f"num_threads={threads}", f"data.train_size={images}", f"trainer.epochs={epochs}",
            "tracking.enabled=false", "name=benchmark"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000, help="training images (stratified subset)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for processes, threads in SETUPS:
        with tempfile.TemporaryDirectory(prefix="distributed-training-") as scratch:  # the run
            runs_dir = Path(scratch)
            subprocess.run(command(processes, threads, runs_dir, args.images, args.epochs), check=True,
                           capture_output=True)  # fmt: skip
            (run_dir,) = runs_dir.iterdir()
            last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            summary = json.loads((run_dir / "summary.json").read_text())
        rows.append({"processes": processes, "threads_each": threads,
                     "images_per_s": last["images_per_second"], "epoch_s": last["epoch_seconds"],
                     "val_accuracy": last["val_accuracy"],
                     "test_accuracy": summary["test"]["accuracy"]})  # fmt: skip
    print_table(
        f"DDP on CPU: default network, {args.images} images, epoch {args.epochs} of {args.epochs}", rows
    )
    write_result("distributed_training", rows, images=args.images, epochs=args.epochs)


if __name__ == "__main__":
    main()
