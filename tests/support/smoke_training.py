"""Train the smoke config through the real CLI in a subprocess (one thread, CPU): the starting point of the
training, promotion, tracking and reproduction tests."""

import subprocess
import sys
from pathlib import Path

from training.config import CONFIGS_DIR


def smoke_command(runs_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", "--config", str(CONFIGS_DIR / "smoke.yaml"),
            f"runs_dir={runs_dir}", "num_threads=1", "device=cpu", *overrides]  # fmt: skip


def train_smoke(runs_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Run it to the end; return the run directory and everything the command printed."""
    result = subprocess.run(smoke_command(runs_dir, *overrides), capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs_dir.iterdir()
    return run_dir, result.stdout + result.stderr
