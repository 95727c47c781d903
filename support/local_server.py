"""Run the real service under uvicorn in a subprocess on a free loopback port: for tests and benchmarks."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"Uvicorn running on (http://[0-9.]+:[0-9]+) \(Press")


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(
        cls,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: Sequence[str | Path] = (sys.executable, "-m", "api.serve"),
        cwd: Path | None = None,
    ) -> "LiveServer":
        """`command` (default: this interpreter's `api.serve`) with `args`, its output in `log_path`, the
        environment's variables updated by `env`. The server binds a port of its own choosing (port 0),
        read back from its log: a port chosen here and bound there could be taken in between."""
        log = log_path.open("wb")
        process = subprocess.Popen(
            [*command, "--port", "0", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        server = cls(process, "", log_path)
        server.wait_until_ready()
        return server

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Until the server has said where it listens and answers `/health/ready` with 200."""
        deadline = time.monotonic() + timeout
        while not self.url and time.monotonic() < deadline and self.process.poll() is None:
            if found := LISTENING.search(self.log_path.read_text(errors="replace")):
                self.url = found.group(1)
            else:
                time.sleep(0.1)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM (what a container runtime sends), then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
