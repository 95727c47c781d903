"""Hyperparameter sweeps: each trial a run directory, a leaderboard by validation loss, never by test."""

import json
from pathlib import Path

import pytest
import yaml

from training.config import ConfigError
from training.sweep import load_sweep, main

SWEEPS = Path(__file__).resolve().parents[1] / "training" / "sweeps"


@pytest.mark.slow
def test_smoke_grid_sweep_ranks_by_validation_loss_and_records_a_failed_trial(
    full_data_dir: Path, tmp_path: Path
) -> None:
    """The shipped smoke sweep plus a learning rate that diverges: before, that trial aborted the sweep and
    no leaderboard was written."""
    sweep = yaml.safe_load((SWEEPS / "smoke.yaml").read_text())
    sweep["search"]["optimizer.lr"]["choices"].append(1.0e12)
    sweep["trials"] = 3
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert main([str(tmp_path / "sweep.yaml"), "--sweeps-dir", str(tmp_path / "sweeps")]) == 0
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    ranked = json.loads((sweep_dir / "leaderboard.json").read_text())
    assert [trial["params"]["optimizer.lr"] for trial in ranked][2] == 1.0e12
    complete, (failed,) = ranked[:2], ranked[2:]
    assert sorted(trial["params"]["optimizer.lr"] for trial in complete) == [0.001, 0.003]
    assert complete[0]["best_val_loss"] < complete[1]["best_val_loss"]
    assert failed["status"] == "failed" and "training diverged in epoch 1" in failed["error"]
    assert all(not key.startswith("test") for trial in ranked for key in trial)
    for trial in complete:
        summary = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())
        assert summary["best_val_loss"] == trial["best_val_loss"]
    assert len(list((sweep_dir / "runs").iterdir())) == 3
    markdown = (sweep_dir / "leaderboard.md").read_text()
    assert "| 1 |" in markdown and "| - | 1000000000000.0 | failed |" in markdown


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
