"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is flushed to disk and renamed onto `target`.

    If the body raises (or the process dies), `target` is untouched and the temporary file is removed
    (or, after a kill, left as a hidden `.part` file that `remove_stale_parts` cleans up).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would make shared artifacts unreadable
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        descriptor = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def folder_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (flock on the folder itself: no lock files among the data),
    so that no other process is writing there while this one checks, cleans or fetches."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as tmp_path:
        tmp_path.write_text(text)


def write_json_atomically(path: Path, payload: object) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2) + "\n")


def remove_stale_parts(target: Path) -> None:
    """Delete temporary files that a killed writer of `target` left behind."""
    for stale in target.parent.glob(f".{target.name}.*.part"):
        stale.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
