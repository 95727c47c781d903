"""Service settings, from environment variables (`APPAREL_*`) so every uvicorn worker sees the same.

Read and validated by pydantic-settings; `from_env` turns a bad value into one line naming the variable.
"""

from pathlib import Path

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from api.feedback_schema import check_database_url
from api.feedback_store import DEFAULT_FEEDBACK_DIR
from api.predictor import InferenceBackend
from text_recognizer.paths import SERVED_WEIGHTS_DIR
from text_recognizer.preprocessing import DEFAULT_MAX_PIXELS

ENV_PREFIX = "APPAREL_"


class SettingsError(ValueError):
    """An `APPAREL_*` variable holds a value its setting cannot take."""


class Settings(BaseSettings):
    # No inf or nan: an infinite wait made a semaphore raise OverflowError (found in review).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore", allow_inf_nan=False)

    # A model file, or a weights folder whose promoted version (its CURRENT) is served.
    model_path: Path = SERVED_WEIGHTS_DIR
    max_upload_bytes: PositiveInt = 10 * 1024 * 1024
    max_pixels: PositiveInt = DEFAULT_MAX_PIXELS
    max_batch_files: PositiveInt = 16
    # Images decoded at once per worker (one per core), and how long a request waits for a decoder
    # before a 503 `busy` with Retry-After.
    max_concurrent_decodes: PositiveInt = 2
    decode_wait_s: NonNegativeFloat = 10.0  # waiting holds no thread, only the upload, already read
    default_top_k: PositiveInt = 3
    # Slow and surplus clients (api.connections): a request's headers must arrive within
    # `header_timeout_s` of its first byte, the whole request within `request_timeout_s` (10 MB in 30 s
    # needs 2.8 Mbit/s), else 408; past `max_connections` open connections per worker a new one gets 503;
    # a client that reads nothing of its answers for `write_timeout_s` is dropped.
    header_timeout_s: PositiveFloat = 10.0
    request_timeout_s: PositiveFloat = 30.0
    write_timeout_s: PositiveFloat = 30.0
    max_connections: PositiveInt = 128
    # One intra-op thread per worker: a single 28x28 forward pass is fastest that way (0.5 ms vs 3 ms
    # with 2 threads on a busy 2-core machine); scale with workers, not threads.
    torch_threads: PositiveInt = 1
    # The forward pass: ONNX Runtime (the network exported at load; 0.43 ms against 0.98 ms for an
    # image and its mirror image, same classes, benchmarks/inference.py), or PyTorch (batch-norm folded).
    inference_backend: InferenceBackend = "onnxruntime"
    # Answer "unsure" below the model card's confidence threshold (chosen on the validation split).
    use_confidence_threshold: bool = True
    # Micro-batching (api.batching): /v1/predict requests that arrive while a forward pass runs share
    # the next one, at most `batch_max_size` images; one that finds the batcher idle runs at once.
    # `batch_wait_ms` > 0 makes every pass wait that long for more requests (fuller passes, more latency);
    # it needs `micro_batching` on. (Before, `batch_wait_ms` 0 meant off: now `micro_batching` false.)
    micro_batching: bool = True
    batch_wait_ms: NonNegativeFloat = 0.0
    batch_max_size: PositiveInt = 32
    # Feedback (POST /v1/feedback): images under this folder, rows in SQLite there unless a database URL
    # (any SQLAlchemy URL, e.g. postgresql://...) is given; shared by all workers.
    feedback_dir: Path = DEFAULT_FEEDBACK_DIR
    feedback_db_url: str = Field("", repr=False)  # may hold a password
    # Abuse of feedback: with a key set, POST /v1/feedback needs it in `X-API-Key` (401 otherwise); each
    # client address may send `feedback_per_minute` a minute per worker (429 past it; 0 = no limit); once
    # the stored images reach `feedback_max_bytes`, feedback gets 507 `storage_full` (0 = no quota).
    feedback_api_key: SecretStr = SecretStr("")  # never shown in a repr or a log
    feedback_per_minute: NonNegativeInt = 30
    feedback_max_bytes: NonNegativeInt = 1_000_000_000

    @field_validator("batch_wait_ms")
    @classmethod
    def window_needs_batching(cls, wait_ms: float, info: ValidationInfo) -> float:
        if wait_ms and not info.data.get("micro_batching", True):
            raise ValueError("a batching window needs micro-batching on (APPAREL_MICRO_BATCHING=true)")
        return wait_ms

    @field_validator("feedback_db_url")
    @classmethod
    def database_driver_installed(cls, url: str) -> str:
        """Found as a new user would: with a PostgreSQL URL and no driver, the server said it was ready,
        then answered every feedback request 500. Now it does not start, and says why."""
        if url:
            check_database_url(url)
        return url

    @classmethod
    def from_env(cls) -> "Settings":
        """Read `APPAREL_MODEL_PATH`, `APPAREL_MAX_UPLOAD_BYTES`, ... ; unset ones keep their defaults."""
        try:
            return cls()
        except ValidationError as error:
            problems = [
                f"{ENV_PREFIX}{str(p['loc'][0]).upper()}={shown(p['loc'][0], p['input'])}: {p['msg'].lower()}"
                for p in error.errors()
            ]
            raise SettingsError("; ".join(problems)) from None


def shown(setting: object, value: object) -> str:
    """A rejected value as an error message may show it: a database URL without its password."""
    if setting == "feedback_db_url" and isinstance(value, str):
        try:
            return repr(make_url(value).render_as_string(hide_password=True))
        except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
            return "(not a URL)"
    return repr(value)
