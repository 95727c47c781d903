"""End-to-end training through the real CLI on real data: run directory, determinism, resume, early stop."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import training.environment
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.versions import DataVersion
from text_recognizer.models import ClassifierModel
from text_recognizer.models.classifier import load_safely
from training.config import CONFIGS_DIR, load_config
from training.run_directory import RunDirectory
from training.trainer import Progress, Trainer

from .conftest import FIXTURES_DIR
from .support.smoke_training import smoke_command, train_smoke

pytestmark = pytest.mark.slow


def train(runs_dir: Path, *overrides: str) -> Path:
    run_dir, output = train_smoke(runs_dir, *overrides)
    assert f"run directory:   {run_dir}" in output
    assert f"best checkpoint: {run_dir / 'checkpoints' / 'best.pt'}" in output
    return run_dir


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_smoke_run_writes_a_complete_run_directory(full_data_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tmp_path / "runs")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "mlflow_run_id", "summary.json",
        "train.log"]  # fmt: skip
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["train_size"] == 2000 and config["num_threads"] == 1
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert set(record) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                           "epoch_seconds", "images_per_second"}  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["data"]["train_images"] == 2000
    assert summary["data"]["test_images"] == 10000
    assert summary["environment"]["torch"] == torch.__version__
    assert len(summary["data"]["checksums"]) == 4
    v1 = DataVersion.read("v1")
    assert (summary["data"]["version"], summary["data"]["version_hash"]) == ("v1", v1.sha256)
    assert summary["data"]["checksums"] == v1.files
    assert summary["test"]["accuracy"] > 0.6  # one epoch on 2,000 images: far above chance (0.1)
    model = ClassifierModel.load(run_dir / "checkpoints" / "best.pt")
    assert model.metadata["metrics"]["test_accuracy"] == summary["test"]["accuracy"]
    assert summary["best_checkpoint_sha256"] == digest(run_dir / "checkpoints" / "best.pt")
    assert "epoch   1/1" in (run_dir / "train.log").read_text()


def test_identical_runs_give_bitwise_identical_best_checkpoints(full_data_dir: Path, tmp_path: Path) -> None:
    first = train(tmp_path / "a", "trainer.epochs=2")
    second = train(tmp_path / "b", "trainer.epochs=2")
    assert digest(first / "checkpoints" / "best.pt") == digest(second / "checkpoints" / "best.pt")
    different_seed = train(tmp_path / "c", "trainer.epochs=2", "seed=1")
    assert digest(first / "checkpoints" / "best.pt") != digest(different_seed / "checkpoints" / "best.pt")


def killed_after_a_checkpoint(runs_dir: Path, *overrides: str) -> tuple[Path, int]:
    """A smoke run killed (SIGKILL) once its first checkpoint exists: its folder and epochs completed."""
    process = subprocess.Popen(smoke_command(runs_dir, *overrides), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if list(runs_dir.glob("*/checkpoints/last.pt")):
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (run_dir,) = runs_dir.iterdir()
    assert not (run_dir / "summary.json").exists()
    return run_dir, load_safely(run_dir / "checkpoints" / "last.pt")["epochs_completed"]


def resume_command(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", "--resume", str(run_dir), *overrides],
                          capture_output=True, text=True)  # fmt: skip


def resume(run_dir: Path, interrupted_after: int) -> None:
    resumed = resume_command(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {run_dir} after epoch {interrupted_after}" in resumed.stdout


def test_killed_and_resumed_run_matches_an_uninterrupted_one(full_data_dir: Path, tmp_path: Path) -> None:
    overrides = ("trainer.epochs=4", "scheduler.name=onecycle", "network.args.dropout=0.3",
                 "augmentation.crop_padding=2", "augmentation.horizontal_flip=true")  # fmt: skip
    reference = train(tmp_path / "reference", *overrides)
    run_dir, interrupted_after = killed_after_a_checkpoint(tmp_path / "interrupted", *overrides)
    assert 1 <= interrupted_after < 4
    resume(run_dir, interrupted_after)
    assert digest(run_dir / "checkpoints" / "best.pt") == digest(reference / "checkpoints" / "best.pt")
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    reference_metrics = (reference / "metrics.jsonl").read_text().splitlines()
    resumed_metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    for expected, actual in zip(reference_metrics, resumed_metrics, strict=True):
        assert json.loads(expected)["val_loss"] == json.loads(actual)["val_loss"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_run_finishes_on_the_cpu_with_device_cpu(full_data_dir: Path, tmp_path: Path) -> None:
    """A run trained on a GPU machine and cut off there (its config.yaml says `device: cuda`) continues
    here with `--resume RUN device=cpu`. Before, --resume refused every override and this machine refused
    `device: cuda`, so such a run could only be started again. What it learns stays as recorded."""
    run_dir, interrupted_after = killed_after_a_checkpoint(tmp_path / "runs", "trainer.epochs=3")
    config_path = run_dir / "config.yaml"
    recorded = config_path.read_text()
    assert "device: cpu" in recorded
    config_path.write_text(recorded.replace("device: cpu", "device: cuda"))
    last = run_dir / "checkpoints" / "last.pt"
    state = load_safely(last)
    state["rng"]["cuda"] = [torch.get_rng_state()]  # a GPU run's checkpoint also holds CUDA's generator
    torch.save(state, last)
    refused = resume_command(run_dir)
    assert refused.returncode == 2 and "use device=cpu" in refused.stderr
    refused = resume_command(run_dir, "device=cpu", "trainer.epochs=9")
    assert refused.returncode == 2
    assert "it may only change device and num_threads (e.g. device=cpu), not trainer.epochs" in refused.stderr
    resumed = resume_command(run_dir, "device=cpu", "num_threads=2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {run_dir} after epoch {interrupted_after}" in resumed.stdout
    assert "on cpu with 2 thread(s)" in (run_dir / "train.log").read_text()
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert "device: cuda" in config_path.read_text()  # the record of where it began is kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a machine with a GPU)")
def test_training_resume_and_prediction_on_cuda(full_data_dir: Path, tmp_path: Path) -> None:
    """The GPU path end to end: train, be killed, resume, load and predict on CUDA as on the CPU. Before,
    the only CUDA-related test was skipped where CUDA is present."""
    run_dir, interrupted_after = killed_after_a_checkpoint(
        tmp_path / "runs", "device=cuda", "trainer.epochs=20"
    )
    assert 1 <= interrupted_after < 20
    resume(run_dir, interrupted_after)
    assert " on cuda" in (run_dir / "train.log").read_text()
    images = read_split(FIXTURES_DIR, "test").images[:64]
    on_gpu = ClassifierModel.load(run_dir / "checkpoints" / "best.pt", device="cuda").predict(images)
    on_cpu = ClassifierModel.load(run_dir / "checkpoints" / "best.pt").predict(images)
    assert list(on_gpu.categories) == list(on_cpu.categories)
    # cuDNN computes float32 convolutions in TF32 by default (a 10-bit mantissa): on an H200 the
    # confidences differed from the CPU's by up to 3e-4 (2026-11-30), so 1e-4 failed there.
    assert torch.allclose(on_gpu.confidences, on_cpu.confidences, atol=1e-3)  # both on the CPU


def test_a_diverging_run_stops_with_a_message_naming_it(full_data_dir: Path, tmp_path: Path) -> None:
    """Before: no loss ever improved, so no best.pt existed and the summary died with FileNotFoundError."""
    result = subprocess.run(smoke_command(tmp_path / "runs", "optimizer.lr=1e12", "trainer.epochs=2"),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: training diverged in epoch 1: train loss nan" in result.stderr
    assert "try a lower optimizer.lr" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "summary.json").exists() and not list((run_dir / "checkpoints").glob("*.pt"))


def test_early_stopping_on_validation_loss(full_data_dir: Path, tmp_path: Path) -> None:
    # A learning rate far too high makes validation loss stop improving after the first epoch.
    run_dir = train(tmp_path / "runs", "trainer.epochs=6", "trainer.patience=2", "optimizer.name=sgd",
                    "optimizer.lr=5.0", "optimizer.momentum=0.0")  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["epochs_completed"] == summary["best_epoch"] + 2
    assert "early stop: no val-loss improvement for 2 epochs" in (run_dir / "train.log").read_text()


def test_progress_tracks_best_validation_loss() -> None:
    progress = Progress()
    assert progress.update(1, 0.5, 0.8, min_delta=0.0)
    assert not progress.update(2, 0.6, 0.9, min_delta=0.0)
    assert not progress.update(3, 0.49, 0.9, min_delta=0.05)
    assert (progress.best_epoch, progress.epochs_without_improvement) == (1, 2)
    assert progress.exhausted(patience=2) and not progress.exhausted(patience=None)


def test_summary_records_the_commit_training_started_from(
    full_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit made while a long run trains must not be recorded as the code that trained it."""
    overrides = [f"runs_dir={tmp_path}", "num_threads=1", "device=cpu", "tracking.enabled=false"]
    config = load_config(CONFIGS_DIR / "smoke.yaml", overrides)
    monkeypatch.setattr(training.environment, "git_commit", lambda: "commit-at-start")
    trainer = Trainer(config, RunDirectory.create(config.runs_dir, config.name))
    monkeypatch.setattr(training.environment, "git_commit", lambda: "commit-made-during-training")
    assert trainer.fit()["environment"]["git_commit"] == "commit-at-start"


@pytest.fixture(scope="module")
def start_weights(full_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run's best checkpoint, for the fine-tuning tests to start from."""
    return train(tmp_path_factory.mktemp("start")) / "checkpoints" / "best.pt"


def test_fine_tuning_starts_from_a_models_weights_and_resumes_to_the_same_result(
    start_weights: Path, tmp_path: Path
) -> None:
    """`network.init_from`: a shop adding photos fine-tunes the shipped model instead of starting over."""
    start = start_weights
    start_model = ClassifierModel.load(start)
    # Another training subset has other pixel statistics: the start weights expect their own.
    overrides = (f"network.init_from={start}", "data.train_size=3000", "trainer.epochs=3",
                 "scheduler.name=cosine", "optimizer.lr=1e-9")  # fmt: skip
    tuned_dir = train(tmp_path / "tuned", *overrides)
    tuned = ClassifierModel.load(tuned_dir / "checkpoints" / "best.pt")
    assert tuned.metadata["init_from"] == {"path": str(start), "sha256": digest(start)}
    assert tuned.normalization == start_model.normalization
    # A learning rate of 1e-9 leaves the weights where they started (batch norm statistics still move).
    for (name, tuned_weights), start_weights in zip(
        tuned.network.named_parameters(), start_model.network.parameters(), strict=True
    ):
        assert torch.allclose(tuned_weights, start_weights, atol=1e-6), name

    run_dir, interrupted_after = killed_after_a_checkpoint(tmp_path / "interrupted", *overrides)
    resume(run_dir, interrupted_after)
    assert digest(run_dir / "checkpoints" / "best.pt") == digest(tuned_dir / "checkpoints" / "best.pt")
    last = ClassifierModel.from_artifact(load_safely(run_dir / "checkpoints" / "last.pt")["model"])
    assert last.normalization == start_model.normalization  # before, resuming took the data's

    # Killed before its first checkpoint, a run has only its config: resumed, it starts from the
    # weights it names (before, from random ones).
    unstarted = tmp_path / "unstarted"
    unstarted.mkdir()
    shutil.copy(tuned_dir / "config.yaml", unstarted / "config.yaml")
    subprocess.run([sys.executable, "-m", "training.cli", "--resume", str(unstarted)], check=True,
                   capture_output=True)  # fmt: skip
    assert digest(unstarted / "checkpoints" / "best.pt") == digest(tuned_dir / "checkpoints" / "best.pt")


def test_distillation_learns_from_a_teacher_records_it_and_resumes_to_the_same_result(
    start_weights: Path, tmp_path: Path
) -> None:
    """`distillation.teachers`: the targets mix each label with the teacher's predictions."""
    overrides = (f"distillation.teachers=[{start_weights}]", "trainer.epochs=3")
    distilled_dir = train(tmp_path / "distilled", *overrides)
    plain_dir = train(tmp_path / "plain", "trainer.epochs=3")
    distilled = ClassifierModel.load(distilled_dir / "checkpoints" / "best.pt")
    assert distilled.metadata["distillation"] == [
        {"path": str(start_weights), "sha256": digest(start_weights)}
    ]
    plain = ClassifierModel.load(plain_dir / "checkpoints" / "best.pt")
    assert "distillation" not in plain.metadata
    assert "distillation" not in plain.metadata["config"], "off, it leaves checkpoints as they were"
    augmentation = plain.metadata["config"]["augmentation"]
    assert "jpeg_probability" not in augmentation, "so does JPEG re-encoding"
    assert not {"affine_probability", "rotation_degrees", "scale"} & set(augmentation), "and rotation"

    def train_losses(run_dir: Path) -> list[float]:
        return [
            json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]

    assert train_losses(distilled_dir) != train_losses(plain_dir)  # same seed, same batches: other targets

    # Resumed, the run recomputes its targets: from the very teacher files it started with, or not at all.
    teacher = shutil.copy(start_weights, tmp_path / "teacher.pt")
    run_dir, interrupted_after = killed_after_a_checkpoint(
        tmp_path / "interrupted", f"distillation.teachers=[{teacher}]", "trainer.epochs=3"
    )
    shutil.copy(plain_dir / "checkpoints" / "best.pt", teacher)
    refused = resume_command(run_dir)
    assert (
        refused.returncode == 2
        and f"cannot resume {run_dir}: its distillation teachers were" in refused.stderr
    )
    shutil.copy(start_weights, teacher)
    resume(run_dir, interrupted_after)
    resumed = ClassifierModel.load(run_dir / "checkpoints" / "best.pt")
    assert resumed.network.state_dict().keys() == distilled.network.state_dict().keys()
    for name, weights in resumed.network.state_dict().items():
        assert torch.equal(weights, distilled.network.state_dict()[name]), name


def test_distillation_refuses_a_teacher_of_other_classes(start_weights: Path, tmp_path: Path) -> None:
    other = ClassifierModel.load(start_weights)
    other.class_names = (*other.class_names[:-1], "Belt")
    belts = tmp_path / "belts.pt"
    other.save(belts)
    result = subprocess.run(smoke_command(tmp_path / "runs", f"distillation.teachers=[{belts}]"),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"distillation.teachers: {belts} classifies (1, 28, 28) images into" in result.stderr
    assert "'Belt')" in result.stderr and "Traceback" not in result.stderr
    missing = subprocess.run(smoke_command(tmp_path / "runs", "distillation.teachers=[nowhere/best.pt]"),
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "nowhere/best.pt does not exist" in missing.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_fine_tuning_refuses_weights_of_another_network(start_weights: Path, tmp_path: Path) -> None:
    start = start_weights
    result = subprocess.run(
        smoke_command(tmp_path / "tuned", f"network.init_from={start}", "network.args.dropout=0.5"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"network.init_from cannot start from {start}: network: the config and data give" in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run(smoke_command(tmp_path / "other", "network.init_from=nowhere/best.pt"),
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "nowhere/best.pt does not exist" in missing.stderr
    # Refused before a run directory was made: none is left to be resumed by mistake.
    assert not (tmp_path / "tuned").exists() and not (tmp_path / "other").exists()
