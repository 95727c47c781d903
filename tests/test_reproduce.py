"""One-command reproduction: a smoke run repeats byte for byte, and a changed run is reported as such."""

import importlib.metadata
import json
from pathlib import Path

import pytest

from release.reproduce import main as reproduce_main

from .support.smoke_training import train_smoke

pytestmark = pytest.mark.slow


@pytest.fixture
def smoke_run(tmp_path: Path, full_data_dir: Path) -> Path:
    return train_smoke(tmp_path / "runs")[0]


def test_reproduction_of_a_smoke_run_is_identical(smoke_run: Path, tmp_path: Path) -> None:
    assert reproduce_main([str(smoke_run), "--runs-dir", str(tmp_path / "again")]) == 0
    (reproduction,) = (tmp_path / "again").iterdir()
    report = json.loads((reproduction / "reproduction.json").read_text())
    assert report["identical_best_checkpoint"] is True
    assert report["metric_differences"] == {} and report["epochs_with_different_val_loss"] == []
    assert report["environment_differences"] == []
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["environment"]["packages"]["torch"] == importlib.metadata.version("torch")
    assert summary["environment"]["packages"]["numpy"] == importlib.metadata.version("numpy")


def test_a_run_that_does_not_repeat_is_reported_point_by_point(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pretend the original ran under another torch and ended elsewhere: each difference must be reported.
    summary_path = smoke_run / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["environment"]["torch"] = "2.0.0"
    summary["best_checkpoint_sha256"] = "0" * 64
    summary["best_val_loss"] += 0.5
    summary["distributed"] = {"processes": 2, "backend": "gloo"}
    summary_path.write_text(json.dumps(summary))
    assert reproduce_main([str(smoke_run), "--runs-dir", str(tmp_path / "again")]) == 1
    output = capsys.readouterr().out
    assert "best checkpoint: DIFFERENT" in output
    assert "metric best_val_loss:" in output
    assert "environment difference: torch: '2.0.0' ->" in output
    assert "environment difference: training processes: 2 -> 1" in output


def test_reproduction_refuses_data_other_than_the_recorded_version(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary_path = smoke_run / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["data"]["version_hash"] = "f" * 64  # as if v1 had held other bytes when the run was made
    summary_path.write_text(json.dumps(summary))
    assert reproduce_main([str(smoke_run), "--runs-dir", str(tmp_path / "again")]) == 2
    assert "does not match data version v1" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()
