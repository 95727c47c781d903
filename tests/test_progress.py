"""Progress bars: on an interactive terminal only, so logs, CI and pipes keep their plain lines."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from text_recognizer.progress import progress

from .conftest import REPO_ROOT


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [Terminal(), io.StringIO()], ids=["terminal", "pipe"])
def test_a_bar_is_drawn_on_a_terminal_and_nowhere_else(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stream)
    assert list(progress(range(3), desc="counting", total=3)) == [0, 1, 2]
    drawn = stream.getvalue()
    assert ("counting:" in drawn and "/3 [" in drawn) == stream.isatty(), drawn


def test_a_download_shows_its_bytes_on_a_terminal(full_data_dir: Path, tmp_path: Path) -> None:
    """The real downloader under a pseudo-terminal, as a person at a shell runs it."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
    command = [sys.executable, "-m", "text_recognizer.datasets.download", "--mirror", str(full_data_dir)]
    process = subprocess.Popen(
        [*command, "--dest", str(tmp_path / "raw")],
        cwd=REPO_ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"},
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=120) == 0, shown.decode(errors="replace")
    assert b"train-images-idx3-ubyte.gz:" in shown and b"%|" in shown, shown[-500:]
