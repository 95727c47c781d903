"""Models that a config names by path (a fine-tuning start, distillation teachers)."""

import hashlib
from pathlib import Path

from text_recognizer.models.classifier import ClassifierModel, load_safely
from training.config import ConfigError


def named_model(path: Path, key: str) -> tuple[ClassifierModel, str]:
    """The model file that config key `key` names, loaded without pickle, and the sha256 of the very
    bytes it was loaded from; a missing file is a ConfigError naming the key."""
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    data = path.read_bytes()
    return ClassifierModel.from_artifact(load_safely(path, data)), hashlib.sha256(data).hexdigest()
