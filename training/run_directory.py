"""A run's directory: resolved config, log, per-epoch metrics, checkpoints and summary, in one place."""

import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from text_recognizer.atomic import write_text_atomically


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> "RunDirectory":
        """A new timestamped directory `runs_dir/<UTC time>-<name>`, never reusing an existing one."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        runs_dir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", *(f"-{n}" for n in range(2, 1000))):
            path = runs_dir / f"{stamp}-{name}{suffix}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise FileExistsError(f"no free run directory name for {stamp}-{name} in {runs_dir}")

    @classmethod
    def at(cls, path: Path) -> "RunDirectory":
        """A run directory at a fixed path (for pipelines); it must not exist yet or be empty."""
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"run directory {path} already exists and is not empty")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def best_checkpoint(self) -> Path:
        """The model artifact of the epoch with the lowest validation loss."""
        return self.path / "checkpoints" / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        """The full training state after the latest epoch, for `--resume`."""
        return self.path / "checkpoints" / "last.pt"

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def keep_metrics_through(self, epoch: int) -> None:
        """On resume, drop records of epochs after the checkpoint (written before a kill)."""
        kept = [record for record in self.read_metrics() if record["epoch"] <= epoch]
        write_text_atomically(self.metrics_path, "".join(json.dumps(record) + "\n" for record in kept))

    def attach_logger(self, name: str, primary: bool = True) -> logging.Logger:
        """Log concise lines to the terminal and timestamped ones to `train.log` (appending on resume).

        `primary=False` for training processes other than rank 0: no file, warnings only on the terminal.
        """
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.setLevel(logging.INFO if primary else logging.WARNING)
        logger.addHandler(console)
        if primary:
            log_file = logging.FileHandler(self.log_path)
            log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(log_file)
        return logger
