"""A table of finished runs from their run directories (the source of truth), sortable by any column.

experiments [--runs-dir runs] [--sort best_val_loss] [--descending] [--json]
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.table import format_table

COLUMNS = (
    "run",
    "config",
    "data",
    "best_val_loss",
    "best_val_accuracy",
    "test_accuracy",
    "parameters",
    "train_minutes",
)


def collect(runs_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for summary_path in sorted(runs_dir.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        rows.append(
            {
                "run": summary_path.parent.name,
                "config": summary["name"],
                "data": summary["data"].get("version", "-"),  # runs from before data versions: "-"
                "best_val_loss": summary["best_val_loss"],
                "best_val_accuracy": summary["best_val_accuracy"],
                "test_accuracy": summary["test"]["accuracy"],
                "parameters": summary["parameters"],
                "train_minutes": summary["train_seconds"] / 60,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--sort", choices=COLUMNS, default="best_val_loss")
    parser.add_argument("--descending", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = sorted(collect(args.runs_dir), key=lambda row: row[args.sort], reverse=args.descending)
    if not rows:
        print(f"no finished runs (with summary.json) in {args.runs_dir}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, decimals=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
