"""The experiments table reads finished runs' summaries and sorts them by any column."""

import json
from pathlib import Path

import pytest

from release.experiments import main


def write_run(runs_dir: Path, name: str, val_loss: float, test_accuracy: float) -> None:
    run = runs_dir / name
    run.mkdir(parents=True)
    summary = {"name": name.split("-")[-1], "data": {"dataset": "fashion_mnist", "version": "v2"},
               "best_val_loss": val_loss, "best_val_accuracy": 0.9, "test": {"accuracy": test_accuracy},
               "parameters": 1000, "train_seconds": 120.0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))


def test_sorts_by_the_chosen_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, "20260101-000000-a", val_loss=0.3, test_accuracy=0.91)
    write_run(tmp_path, "20260101-000001-b", val_loss=0.2, test_accuracy=0.90)
    (tmp_path / "20260101-000002-unfinished").mkdir()
    assert main(["--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "config", "data", "best_val_loss"]
    assert [line.split()[0] for line in lines[1:]] == ["20260101-000001-b", "20260101-000000-a"]
    assert main(["--runs-dir", str(tmp_path), "--sort", "test_accuracy", "--descending", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["config"] for row in rows] == ["a", "b"] and rows[0]["train_minutes"] == 2.0
    assert rows[0]["data"] == "v2"


def test_no_finished_runs_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs-dir", str(tmp_path)]) == 1
    assert "no finished runs" in capsys.readouterr().err
