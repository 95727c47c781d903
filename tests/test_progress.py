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
from .support.smoke_training import smoke_command


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


def test_tqdm_disable_turns_the_bars_off_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: tqdm's own TQDM_DISABLE yields to an explicit keyword, so it did nothing."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert list(progress(range(3), desc="counting", total=3)) == [0, 1, 2]
    assert terminal.getvalue() == ""


def on_terminal(command: list[str]) -> str:
    """Everything `command` shows on a pseudo-terminal 100 columns wide, as a person at a shell sees it."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
    environment = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=terminal, stdout=terminal, stderr=terminal, env=environment
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
    os.close(controller)
    assert process.wait(timeout=300) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


def test_a_download_shows_its_bytes_on_a_terminal(full_data_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "text_recognizer.datasets.download", "--mirror", str(full_data_dir)]
    shown = on_terminal([*command, "--dest", str(tmp_path / "raw")])
    assert "train-images-idx3-ubyte.gz:" in shown and "%|" in shown, shown[-500:]


@pytest.mark.slow
def test_an_epoch_shows_its_batches_on_a_terminal(full_data_dir: Path, tmp_path: Path) -> None:
    """Before, a 40-second epoch showed nothing until its one line at the end."""
    shown = on_terminal(smoke_command(tmp_path / "runs"))
    assert "epoch 1/1:" in shown and "/31 [" in shown, shown[-500:]  # 2,000 images in batches of 64
