"""A real MLflow tracking server: `mlflow server` with its own backend store and artifact folder on a free
loopback port, as a team runs one (README, Experiment tracking); clients reach it over HTTP only."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx

from .ports import free_port

MLFLOW = str(Path(sys.executable).parent / "mlflow")


@contextmanager
def mlflow_server(folder: Path, timeout: float = 180) -> Iterator[str]:
    """Start it, wait until `/health` answers, yield its URL; stop it on the way out."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1], "--workers", "1"]  # fmt: skip
    log_path = folder / "mlflow-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
