"""What every benchmark shares: the machine description, percentiles, a table printer, the JSON writer."""

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from training.environment import cpu_model, git_commit
from training.runtime import usable_cores
from training.table import format_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n{format_table(rows)}")


def write_result(name: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
        **extra,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written: {path}")
    return path
