"""The promoted model's folder: a version directory per promotion, and `CURRENT` naming the served one.

    weights/
      CURRENT                                 "20261128T232947000000Z-b8009feda658"
      20261128T232947000000Z-b8009feda658/    model.pt, model_card.json, MODEL_CARD.md

A promotion writes its files into a new version directory and then replaces `CURRENT` by one rename, so a
reader sees either the old version or the new one whole, never new weights beside an old card; a
promotion that dies before the rename changes nothing. The previous version is kept (for a reader that
resolved `CURRENT` just before the switch, and for `--rollback`); older ones are removed.
"""

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from text_recognizer.atomic import folder_lock, write_text_atomically
from text_recognizer.paths import WEIGHTS_DIR

CURRENT = "CURRENT"
MODEL_FILE = "model.pt"
VERSION_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{12}")  # promotion time (UTC, to the microsecond)


class PromotedModelError(RuntimeError):
    """The weights folder has no usable promoted model."""


def current_version(weights_dir: Path = WEIGHTS_DIR) -> str:
    """The version `CURRENT` names. A name whose directory is gone is read again: two promotions may
    have passed since it was read (the second prunes the first's predecessor), and `CURRENT` moved on."""
    pointer = weights_dir / CURRENT
    seen = None
    while True:
        try:
            name = pointer.read_text().strip()
        except FileNotFoundError:
            missing = f"{weights_dir} holds no promoted model ({CURRENT} is missing)"
            raise PromotedModelError(missing) from None
        if VERSION_NAME.fullmatch(name) and (weights_dir / name).is_dir():
            return name
        if name == seen:  # the same name twice: not a promotion in flight, a broken folder
            raise PromotedModelError(f"{pointer} names {name!r}, which is not a version directory beside it")
        seen = name


def promoted_model_path(weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The served artifact: `model.pt` in the version directory that `CURRENT` names."""
    return weights_dir / current_version(weights_dir) / MODEL_FILE


def model_file(path: Path) -> Path:
    """An artifact given as a file, or as a weights folder standing for its promoted model."""
    return promoted_model_path(path) if (path / CURRENT).exists() else path


def versions(weights_dir: Path) -> list[str]:
    """The version directories present, oldest first (their names start with the promotion time)."""
    if not weights_dir.is_dir():
        return []
    return sorted(p.name for p in weights_dir.iterdir() if p.is_dir() and VERSION_NAME.fullmatch(p.name))


def publish(weights_dir: Path, sha256: str, files: Mapping[str, Path]) -> Path:
    """Copy `files` (name -> a written file) into a new version directory and switch `CURRENT` to it.

    Returns the new version directory. Everything before the switch can fail without effect.
    """
    weights_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(weights_dir):  # one promotion at a time: pruning must not take another's staging
        return switch_to_new_version(weights_dir, sha256, files)


def switch_to_new_version(weights_dir: Path, sha256: str, files: Mapping[str, Path]) -> Path:
    try:  # kept for readers in flight and rollback; a damaged CURRENT is replaced, not an obstacle
        previous: str | None = current_version(weights_dir)
    except PromotedModelError:
        previous = None
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{sha256[:12]}"
    if (weights_dir / name).exists():
        raise PromotedModelError(f"{weights_dir / name} exists already")
    staging = Path(tempfile.mkdtemp(dir=weights_dir, prefix=f".{name}.", suffix=".part"))
    try:
        for file_name, source in files.items():
            shutil.copyfile(source, staging / file_name)
            sync(staging / file_name)
        staging.chmod(0o755)
        sync(staging)
        os.rename(staging, weights_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sync(weights_dir)
    write_text_atomically(weights_dir / CURRENT, name + "\n")  # the switch
    prune(weights_dir, keep={name, previous})
    return weights_dir / name


def rollback(weights_dir: Path = WEIGHTS_DIR) -> str:
    """Serve the newest version older than the current one again; returns its name."""
    with folder_lock(weights_dir):
        current = current_version(weights_dir)
        older = [name for name in versions(weights_dir) if name < current]
        if not older:
            raise PromotedModelError(f"{weights_dir} keeps no version older than {current} to roll back to")
        write_text_atomically(weights_dir / CURRENT, older[-1] + "\n")
        return older[-1]


def prune(weights_dir: Path, keep: set[str | None]) -> None:
    """Remove version directories not in `keep`, and staging folders a killed promotion left."""
    for name in versions(weights_dir):
        if name not in keep:
            shutil.rmtree(weights_dir / name, ignore_errors=True)
    for stale in weights_dir.glob(".*.part"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
