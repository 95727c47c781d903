"""Command line for training: `train [--config FILE] [--resume RUN_DIR] [key=value ...]`."""

import argparse
import sys
from pathlib import Path

from training.config import CONFIGS_DIR, RESUME_KEYS, load_config
from training.errors import USER_ERRORS
from training.trainer import resume_run, start_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train a classifier on Fashion-MNIST from a YAML config.",
        epilog="example: train --config training/configs/smoke.yaml trainer.epochs=2 optimizer.lr=0.003",
    )
    parser.add_argument("--config", type=Path, default=CONFIGS_DIR / "default.yaml", help="YAML config file")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--run-dir", type=Path, help="new run directory (default runs/<time>-<name>)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help=f"dotted config overrides; with --resume only {' and '.join(RESUME_KEYS)} (where it continues)",
    )
    args = parser.parse_args(argv)
    try:
        if args.resume:
            resume_run(args.resume, args.overrides)
        else:
            start_run(load_config(args.config, args.overrides), args.run_dir)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the last completed epoch is saved; continue with --resume RUN_DIR", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
