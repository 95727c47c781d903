"""Hyperparameter search over config keys with Optuna: each trial is a normal run directory, and the
leaderboard is sorted by validation loss. Selection never looks at the test split.

    sweep SWEEP.yaml

A sweep file names a base config, fixed overrides, the sampler (`grid` or `random`), a trial count and
the search space of dotted config keys:

    name: lr-and-width
    base_config: training/configs/default.yaml
    sampler: random            # or grid (then every combination of `choices` runs)
    trials: 8
    seed: 0
    overrides: {trainer.epochs: 5}
    search:
      optimizer.lr: {low: 0.0005, high: 0.01, log: true}
      network.args.hidden_size: {choices: [64, 128, 256]}
"""

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from training.config import ConfigError, load_config
from training.errors import USER_ERRORS
from training.trainer import start_run


class SweepError(RuntimeError):
    """The sweep produced no result: every trial failed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchDimension(Strict):
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def one_kind(self) -> "SearchDimension":
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either `choices` or both `low` and `high`")
        return self


class SweepConfig(Strict):
    name: str
    base_config: Path
    sampler: Literal["grid", "random"] = "random"
    trials: PositiveInt = 8
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchDimension]

    @model_validator(mode="after")
    def grid_needs_choices(self) -> "SweepConfig":
        if self.sampler == "grid" and any(d.choices is None for d in self.search.values()):
            raise ValueError("a grid sweep needs `choices` for every searched key")
        return self


def load_sweep(path: Path) -> SweepConfig:
    try:
        return SweepConfig.model_validate(yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} not found") from None
    except ValidationError as error:
        problems = [f"  {'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors()]
        raise ConfigError("invalid sweep:\n" + "\n".join(problems)) from None


def sample(trial: optuna.Trial, key: str, dimension: SearchDimension) -> Any:
    if dimension.choices is not None:
        return trial.suggest_categorical(key, dimension.choices)
    assert dimension.low is not None and dimension.high is not None
    if dimension.integer:
        return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)


def as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def run_sweep(sweep: SweepConfig, sweeps_dir: Path = Path("sweeps")) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output = sweeps_dir / f"{stamp}-{sweep.name}"
    output.mkdir(parents=True)
    fixed = [as_override(key, value) for key, value in sweep.overrides.items()]
    load_config(
        sweep.base_config, [*fixed, f"runs_dir={output / 'runs'}"]
    )  # fail early on a bad base or override
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {key: sample(trial, key, dimension) for key, dimension in sweep.search.items()}
        overrides = [*fixed, *(as_override(k, v) for k, v in params.items())]
        config = load_config(
            sweep.base_config,
            [*overrides, f"runs_dir={output / 'runs'}", f"name={sweep.name}-trial{trial.number}"],
        )
        try:
            summary = start_run(config)
        except Exception as error:  # one trial's failure (divergence, a bad combination) is a result too
            trials.append({"trial": trial.number, "params": params, "status": "failed", "error": str(error)})
            return math.nan  # Optuna records the trial as failed and goes on
        trials.append(
            {
                "trial": trial.number,
                "params": params,
                "status": "complete",
                "best_val_loss": summary["best_val_loss"],
                "best_val_accuracy": summary["best_val_accuracy"],
                "best_epoch": summary["best_epoch"],
                "parameters": summary["parameters"],
                "train_seconds": summary["train_seconds"],
                "run_dir": summary["run_dir"],
            }
        )
        return float(summary["best_val_loss"])

    if sweep.sampler == "grid":
        space = {key: dimension.choices for key, dimension in sweep.search.items()}
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(space, seed=sweep.seed)  # type: ignore[arg-type]
    else:
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=sampler, study_name=sweep.name)
    study.optimize(objective, n_trials=sweep.trials)
    complete = sorted((t for t in trials if t["status"] == "complete"), key=lambda t: t["best_val_loss"])
    write_leaderboard(output, sweep, [*complete, *(t for t in trials if t["status"] == "failed")])
    if not complete:
        raise SweepError(f"every trial failed; see {output / 'leaderboard.md'}")
    return output


def write_leaderboard(output: Path, sweep: SweepConfig, ranked: list[dict[str, Any]]) -> None:
    """JSON and Markdown, best validation loss first, failed trials last with their error; test metrics
    deliberately left out."""
    (output / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    (output / "leaderboard.json").write_text(json.dumps(ranked, indent=2) + "\n")
    keys = list(sweep.search)
    lines = [
        f"# Sweep {sweep.name}: leaderboard by validation loss",
        "",
        "| rank | " + " | ".join(keys) + " | val loss | val acc | epoch | run |",
        "| --- | " + " | ".join("---" for _ in keys) + " | --- | --- | --- | --- |",
    ]
    for rank, trial in enumerate(ranked, 1):
        values = " | ".join(str(trial["params"][k]) for k in keys)
        if trial["status"] == "failed":
            error = trial["error"].replace("|", "/").replace("\n", " ")
            lines.append(f"| - | {values} | failed | - | - | {error} |")
            continue
        lines.append(
            f"| {rank} | {values} | {trial['best_val_loss']:.4f} | {trial['best_val_accuracy']:.4f} "
            f"| {trial['best_epoch']} | `{trial['run_dir']}` |"
        )
    (output / "leaderboard.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", type=Path, metavar="SWEEP.yaml")
    parser.add_argument("--sweeps-dir", type=Path, default=Path("sweeps"))
    args = parser.parse_args(argv)
    try:
        output = run_sweep(load_sweep(args.sweep), args.sweeps_dir)
    except (SweepError, *USER_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"leaderboard: {output / 'leaderboard.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
