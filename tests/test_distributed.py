"""Distributed training: ./tasks/train.sh --nproc 2 runs DDP with gloo on this CPU (2 processes), and
two nodes of one process each meet through torchrun's c10d rendezvous."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from training.config import CONFIGS_DIR

from .conftest import REPO_ROOT
from .support.ports import free_port
from .support.smoke_training import train_smoke

pytestmark = pytest.mark.slow
TRAIN = [str(REPO_ROOT / "tasks" / "train.sh"), "--nproc", "2", "--config", str(CONFIGS_DIR / "smoke.yaml"),
         "device=cpu", "num_threads=1"]  # fmt: skip


def train_ddp(runs_dir: Path, *overrides: str) -> tuple[Path, str]:
    result = subprocess.run([*TRAIN, f"runs_dir={runs_dir}", *overrides], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = runs_dir.iterdir()
    return run_dir, result.stdout


def test_two_processes_write_one_run_and_match_one_process(full_data_dir: Path, tmp_path: Path) -> None:
    run_dir, output = train_ddp(tmp_path / "ddp")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["distributed"] == {"processes": 2, "backend": "gloo"}
    files = ["checkpoints", "config.yaml", "metrics.jsonl", "mlflow_run_id", "summary.json", "train.log"]
    assert sorted(p.name for p in run_dir.iterdir()) == files
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert output.count("epoch   1/1") == 1, "only rank 0 reports"
    assert summary["data"]["train_images"] == 2000  # each process trained on its half of every batch
    single, _ = train_smoke(tmp_path / "single")
    single_summary = json.loads((single / "summary.json").read_text())
    assert abs(summary["test"]["accuracy"] - single_summary["test"]["accuracy"]) < 0.03
    assert abs(record["val_loss"] - json.loads((single / "metrics.jsonl").read_text())["val_loss"]) < 0.1


def test_two_nodes_give_the_best_checkpoint_of_two_processes_on_one(
    full_data_dir: Path, tmp_path: Path
) -> None:
    """The README's multi-node command, as two nodes on this machine: two train.sh launches of one process
    each, meeting through torchrun's c10d rendezvous on loopback."""
    endpoint = f"127.0.0.1:{free_port()}"
    smoke = TRAIN[3:]  # the config and its overrides, without --nproc 2

    def node(rank: int) -> list[str]:
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes"]
        launch = [TRAIN[0], "--nproc", "1", "--nnodes", "2", "--node-rank", str(rank), *rendezvous]
        return [*launch, *smoke, f"runs_dir={tmp_path / 'nodes'}"]

    logs = [tmp_path / f"node-{rank}.log" for rank in (0, 1)]
    nodes = []
    try:
        for rank, log in enumerate(logs):  # each to a file: a full pipe must not stall a collective
            with log.open("w") as output:
                nodes.append(subprocess.Popen(node(rank), stdout=output, stderr=subprocess.STDOUT,
                                              start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + 400  # under pytest's own timeout, so the finally below runs
        for process in nodes:
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # train.sh, torchrun and its worker
    outputs = [log.read_text() for log in logs]
    assert [process.returncode for process in nodes] == [0, 0], "\n".join(outputs)
    assert sum(output.count("epoch   1/1") for output in outputs) == 1, "only global rank 0 reports"
    (run_dir,) = (tmp_path / "nodes").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["distributed"] == {"processes": 2, "backend": "gloo"}
    one_node, _ = train_ddp(tmp_path / "one-node")
    expected = json.loads((one_node / "summary.json").read_text())
    assert summary["best_checkpoint_sha256"] == expected["best_checkpoint_sha256"]
    assert summary["test"] == expected["test"]


def test_killed_distributed_run_resumes_to_the_same_checkpoint(full_data_dir: Path, tmp_path: Path) -> None:
    overrides = ("trainer.epochs=3", "network.args.dropout=0.3", "augmentation.crop_padding=2")
    reference, _ = train_ddp(tmp_path / "reference", *overrides)
    runs_dir = tmp_path / "interrupted"
    process = subprocess.Popen([*TRAIN, f"runs_dir={runs_dir}", *overrides], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if list(runs_dir.glob("*/checkpoints/last.pt")):
            os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (run_dir,) = runs_dir.iterdir()
    resumed = subprocess.run([*TRAIN[:3], "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stdout
    assert (run_dir / "checkpoints" / "best.pt").read_bytes() == (
        reference / "checkpoints" / "best.pt"
    ).read_bytes()


def test_a_batch_that_does_not_split_evenly_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = subprocess.run([*TRAIN, f"runs_dir={tmp_path / 'runs'}", "trainer.batch_size=63"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0
    assert (
        "trainer.batch_size 63 (the global batch) must be divisible by the 2 training processes"
        in result.stderr
    )
    assert not (tmp_path / "runs").exists()
