"""Service settings, from environment variables (`APPAREL_*`) so every uvicorn worker sees the same."""

import os
from dataclasses import dataclass, fields
from pathlib import Path

from text_recognizer.datasets.feedback import DEFAULT_FEEDBACK_DIR
from text_recognizer.paths import WEIGHTS_DIR
from text_recognizer.preprocessing import DEFAULT_MAX_PIXELS

ENV_PREFIX = "APPAREL_"


@dataclass(frozen=True)
class Settings:
    # A model file, or a weights folder whose promoted version (its CURRENT) is served.
    model_path: Path = WEIGHTS_DIR
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_files: int = 16
    # Images decoded at once per worker (one per core), and how long a request waits for a decoder
    # before a 503 `busy` with Retry-After.
    max_concurrent_decodes: int = 2
    decode_wait_s: float = 2.0
    default_top_k: int = 3
    # Slow and surplus clients (api.connections): a request's headers must arrive within
    # `header_timeout_s` of its first byte, the whole request within `request_timeout_s` (10 MB in 30 s
    # needs 2.8 Mbit/s), else 408; past `max_connections` open connections per worker a new one gets 503.
    header_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_connections: int = 128
    # One intra-op thread per worker: a single 28x28 forward pass is fastest that way (0.5 ms vs 3 ms
    # with 2 threads on a busy 2-core machine); scale with workers, not threads.
    torch_threads: int = 1
    # Answer "unsure" below the model card's confidence threshold (chosen on the validation split).
    use_confidence_threshold: bool = True
    # Micro-batching: wait up to this long for concurrent /v1/predict requests to share one forward
    # pass (0 = off: each request runs alone), at most `batch_max_size` images per pass.
    batch_wait_ms: float = 0.0
    batch_max_size: int = 32
    # Feedback (POST /v1/feedback): images under this folder, rows in SQLite there unless a database URL
    # (any SQLAlchemy URL, e.g. postgresql://...) is given; shared by all workers.
    feedback_dir: Path = DEFAULT_FEEDBACK_DIR
    feedback_db_url: str = ""
    # Abuse of feedback: with a key set, POST /v1/feedback needs it in `X-API-Key` (401 otherwise); each
    # client address may send `feedback_per_minute` a minute per worker (429 past it; 0 = no limit); once
    # the stored images reach `feedback_max_bytes`, feedback gets 507 `storage_full` (0 = no quota).
    feedback_api_key: str = ""
    feedback_per_minute: int = 30
    feedback_max_bytes: int = 1_000_000_000

    @classmethod
    def from_env(cls) -> "Settings":
        """Read `APPAREL_MODEL_PATH`, `APPAREL_MAX_UPLOAD_BYTES`, ... ; unset ones keep their defaults."""
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = os.environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            values[field.name] = parse(field.name, raw)
        return cls(**values)  # type: ignore[arg-type]


def parse(name: str, raw: str) -> object:
    """An environment value as the type of the setting it sets, or an error naming the variable."""
    if name in ("model_path", "feedback_dir"):
        return Path(raw)
    if name in ("feedback_db_url", "feedback_api_key"):
        return raw
    if name == "use_confidence_threshold":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: use true or false")
        return raw.lower() in ("1", "true", "yes")
    if name.endswith(("_s", "_ms")):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a whole number") from None
