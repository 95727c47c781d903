"""Service settings, from environment variables (`APPAREL_*`) so every uvicorn worker sees the same."""

import os
from dataclasses import dataclass, fields
from pathlib import Path

from text_recognizer.paths import PROMOTED_MODEL_PATH
from text_recognizer.preprocessing import DEFAULT_MAX_PIXELS

ENV_PREFIX = "APPAREL_"


@dataclass(frozen=True)
class Settings:
    model_path: Path = PROMOTED_MODEL_PATH
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_files: int = 16
    default_top_k: int = 3
    # One intra-op thread per worker: a single 28x28 forward pass is fastest that way (0.5 ms vs 3 ms
    # with 2 threads on a busy 2-core machine); scale with workers, not threads.
    torch_threads: int = 1

    @classmethod
    def from_env(cls) -> "Settings":
        """Read `APPAREL_MODEL_PATH`, `APPAREL_MAX_UPLOAD_BYTES`, ... ; unset ones keep their defaults."""
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = os.environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            try:
                values[field.name] = Path(raw) if field.name == "model_path" else int(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a whole number") from None
        return cls(**values)  # type: ignore[arg-type]
