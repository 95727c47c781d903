"""Hyperparameter sweeps: each trial a run directory, a leaderboard by validation loss, never by test."""

import json
from pathlib import Path

import pytest

from training.config import ConfigError
from training.sweep import load_sweep, main

SWEEPS = Path(__file__).resolve().parents[1] / "training" / "sweeps"


@pytest.mark.slow
def test_smoke_grid_sweep_writes_a_leaderboard_sorted_by_validation_loss(
    full_data_dir: Path, tmp_path: Path
) -> None:
    assert main([str(SWEEPS / "smoke.yaml"), "--sweeps-dir", str(tmp_path)]) == 0
    (sweep_dir,) = tmp_path.iterdir()
    ranked = json.loads((sweep_dir / "leaderboard.json").read_text())
    assert sorted(trial["params"]["optimizer.lr"] for trial in ranked) == [0.001, 0.003]
    assert [t["best_val_loss"] for t in ranked] == sorted(t["best_val_loss"] for t in ranked)
    assert all(not key.startswith("test") for trial in ranked for key in trial)
    for trial in ranked:
        summary = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())
        assert summary["best_val_loss"] == trial["best_val_loss"]
    assert len(list((sweep_dir / "runs").iterdir())) == 2
    assert "| 1 |" in (sweep_dir / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: s\nbase_config: x.yaml\nsearch: {optimizer.lr: {low: 0.1}}\n",
         "give either `choices` or both"),
        ("name: s\nbase_config: x.yaml\nsampler: grid\nsearch: {optimizer.lr: {low: 0.1, high: 1}}\n",
         "a grid sweep needs `choices`"),
        ("name: s\nbase_config: x.yaml\nsearch: {}\ntrails: 3\n", "trails: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_invalid_sweep_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)
