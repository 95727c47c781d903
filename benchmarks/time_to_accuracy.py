"""Time to accuracy: wall time of training epochs until the default config first reaches 92% and 93%
validation accuracy on this machine.

    python -m benchmarks.time_to_accuracy [--run RUN_DIR]

Without --run it trains training/configs/default.yaml (about ten minutes on 2 cores); with --run it reads
that run's metrics.jsonl.
"""

import argparse
import itertools
from pathlib import Path

from benchmarks.common import print_table, write_result
from training.config import CONFIGS_DIR, load_config
from training.run_directory import RunDirectory
from training.trainer import start_run

TARGETS = (0.92, 0.93)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="an existing run directory to read instead of training")
    args = parser.parse_args()
    run_path = args.run or Path(start_run(load_config(CONFIGS_DIR / "default.yaml"))["run_dir"])
    records = RunDirectory(run_path).read_metrics()
    elapsed = list(itertools.accumulate(record["epoch_seconds"] for record in records))
    rows = []
    for target in TARGETS:
        reached = next((i for i, r in enumerate(records) if r["val_accuracy"] >= target), None)
        rows.append(
            {
                "val_accuracy_target": target,
                "epoch": records[reached]["epoch"] if reached is not None else "not reached",
                "seconds": elapsed[reached] if reached is not None else float("nan"),
                "minutes": elapsed[reached] / 60 if reached is not None else float("nan"),
            }
        )
    print_table(f"time to accuracy, {run_path.name}", rows)
    write_result("time_to_accuracy", rows, run=str(run_path), epochs=len(records))


if __name__ == "__main__":
    main()
