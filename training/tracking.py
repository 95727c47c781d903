"""Mirror runs into MLflow: flattened config, per-epoch metrics, summary, artifacts (config, metrics,
summary, plots, model card) and model versions.

The run directory stays the source of truth. Tracking can be switched off in the config, and a tracking
failure (say, an unreachable server) is logged once and never stops training. The store is
`MLFLOW_TRACKING_URI`, or a local SQLite store under `mlruns/` in the project.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from text_recognizer.paths import PROJECT_ROOT

LOCAL_STORE = PROJECT_ROOT / "mlruns"
RUN_ID_FILE = "mlflow_run_id"
Result = TypeVar("Result")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{LOCAL_STORE / 'mlflow.db'}"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    def __init__(self, enabled: bool, experiment: str, log: logging.Logger) -> None:
        self.enabled = enabled
        self.experiment = experiment
        self.log = log
        self.client: Any = None
        self.run_id: str | None = None

    def attempt(self, what: str, action: Callable[[], Result]) -> Result | None:
        """Run a tracking call; on the first failure, say so and stop tracking for this run."""
        if not self.enabled:
            return None
        try:
            return action()
        except Exception as error:
            self.enabled = False
            self.log.warning(
                "tracking failed while %s (%s: %s); continuing without MLflow, the run directory is complete",
                what,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            return None

    def start(self, run_dir: Path, params: dict[str, Any], tags: dict[str, str]) -> None:
        """Open the MLflow run of `run_dir`: a new one, or the one a resumed run already had."""

        def open_run() -> None:
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            from mlflow import MlflowClient
            from mlflow.entities import Param

            uri = tracking_uri()
            local_store = (
                Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
            )
            if local_store:
                local_store.mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(uri)
            id_file = run_dir / RUN_ID_FILE
            if id_file.exists():
                self.run_id = id_file.read_text().strip()
                return
            experiment = self.client.get_experiment_by_name(self.experiment)
            if experiment is None:
                artifacts = (local_store / "artifacts").as_uri() if local_store else None
                experiment_id = self.client.create_experiment(self.experiment, artifact_location=artifacts)
            else:
                experiment_id = experiment.experiment_id
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            flat = [Param(key, value[:6000]) for key, value in flatten(params).items()]
            self.client.log_batch(self.run_id, params=flat)
            id_file.write_text(self.run_id + "\n")
            self.log.info("tracking: MLflow run %s in %s", self.run_id, uri)

        self.attempt("starting the MLflow run", open_run)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        def log() -> None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            batch = [Metric(key, float(value), stamp, step or 0) for key, value in metrics.items()]
            self.client.log_batch(self.run_id, metrics=batch)

        self.attempt("logging metrics", log)

    def log_artifacts(self, paths: list[Path], folder: str | None = None) -> None:
        def log() -> None:
            for path in paths:
                self.client.log_artifact(self.run_id, str(path), folder)

        self.attempt("logging artifacts", log)

    def register_model(self, name: str, files: list[Path]) -> str | None:
        """Log `files` under `model/` in this run and register them as a new version of model `name`."""

        def register() -> str:
            from mlflow.exceptions import MlflowException

            for path in files:
                self.client.log_artifact(self.run_id, str(path), "model")
            with contextlib.suppress(MlflowException):  # already registered: add a version
                self.client.create_registered_model(name)
            source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
            return str(self.client.create_model_version(name, source, run_id=self.run_id).version)

        return self.attempt("registering the model version", register)

    def finish(self, status: str = "FINISHED") -> None:
        self.attempt("closing the MLflow run", lambda: self.client.set_terminated(self.run_id, status))


def tracker_for_run(run_dir: Path, log: logging.Logger) -> Tracker | None:
    """The tracker of a finished run that was tracked (for evaluation plots and promotion), else None."""
    if not (run_dir / RUN_ID_FILE).exists():
        return None
    tracker = Tracker(True, "", log)
    tracker.start(run_dir, {}, {})
    return tracker if tracker.enabled else None
