"""MLflow tracking of runs, evaluations and promotions, in a local store and through a tracking server;
and training that survives a dead tracking server."""

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from release.evaluate import main as evaluate_main
from release.promote import REGISTERED_MODEL_NAME
from release.promote import main as promote_main
from text_recognizer.promoted import promoted_model_path
from training.tracking import RUN_ID_FILE

from .support.mlflow_server import mlflow_server
from .support.smoke_training import train_smoke

pytestmark = pytest.mark.slow


@pytest.fixture(params=["store", "server"])
def tracking_uri(
    request: pytest.FixtureRequest, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The session's SQLite store, and a real `mlflow server` reached over HTTP only: training (a
    subprocess), evaluation and promotion find it through MLFLOW_TRACKING_URI, as a team's would."""
    if request.param == "store":
        yield mlflow_store
        return
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url


def test_run_evaluation_and_promotion_are_tracked(
    full_data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    run_dir, _ = train_smoke(tmp_path / "runs")
    client = MlflowClient(tracking_uri)
    run = client.get_run((run_dir / RUN_ID_FILE).read_text().strip())
    assert run.data.params["optimizer.lr"] == "0.003" and run.data.params["data.train_size"] == "2000"
    assert run.data.tags["config"] == "smoke" and run.info.status == "FINISHED"
    assert run.data.tags["data_version"] == "v1" and run.data.params["data.version"] == "v1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["test_accuracy"] == summary["test"]["accuracy"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
    }

    assert evaluate_main([str(run_dir), "--split", "val"]) == 0
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/val")}
    assert "evaluation/val/confusion_matrix.png" in evaluation

    weights = tmp_path / "weights"
    arguments = ["--weights-dir", str(weights), "--min-test-accuracy", "0.5", "--domain-floors", "none",
                 "--behaviour-bars", "none", "--unsure-target-accuracy", "0.9"]  # fmt: skip
    assert promote_main([str(run_dir), *arguments]) == 0
    card = json.loads(promoted_model_path(weights).with_name("model_card.json").read_text())
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    assert card["mlflow"]["version"] in {str(v.version) for v in versions}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {
        "model/model.pt",
        "model/model_card.json",
    }
    (registered,) = [v for v in versions if str(v.version) == card["mlflow"]["version"]]
    assert registered.run_id == run.info.run_id
    downloaded = Path(client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path)))
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == card["sha256"]
    if tracking_uri.startswith("http"):  # the server keeps the artifacts; the client only talked HTTP
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert len(list((tmp_path / "artifacts").rglob("model.pt"))) == 1


def test_training_finishes_when_the_tracking_server_is_unreachable(
    full_data_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens on the discard port
    run_dir, output = train_smoke(tmp_path / "runs", env=env)
    assert "tracking failed while starting the MLflow run" in output
    assert (run_dir / "summary.json").exists() and not (run_dir / RUN_ID_FILE).exists()


def test_tracking_can_be_switched_off(full_data_dir: Path, tmp_path: Path) -> None:
    run_dir, output = train_smoke(tmp_path / "runs", "tracking.enabled=false")
    assert not (run_dir / RUN_ID_FILE).exists() and "MLflow" not in output
