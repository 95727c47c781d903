"""Feedback from people who used a prediction: the image, its correct category, what the model said.

A source of labelled images for new data versions (`./tasks/data.sh add NAME --from BASE --feedback`).

Rows live in any SQLAlchemy database (SQLite under `data/feedback/` by default); the uploaded bytes are
saved under a content-addressed name beside it, written atomically before the row is committed, so a
row never points at a missing or partial image. The same image cannot be given feedback twice.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from text_recognizer.atomic import atomic_path
from text_recognizer.paths import PROJECT_ROOT

DEFAULT_FEEDBACK_DIR = PROJECT_ROOT / "data" / "feedback"
IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}

metadata = MetaData()
feedback_table = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("image_sha256", String(64), nullable=False, unique=True),
    Column("image_path", String(255), nullable=False),  # relative to the images folder
    Column("label", Integer, nullable=False),
    Column("category", String(64), nullable=False),
    Column("predicted_category", String(64), nullable=False),
    Column("predicted_confidence", Float, nullable=False),
    Column("confirmed", Boolean, nullable=False),  # the person agreed with the prediction
    Column("model_version", String(64), nullable=False),
    Column("request_id", String(64)),
)


class DuplicateFeedbackError(ValueError):
    def __init__(self, existing_id: int) -> None:
        super().__init__(f"this image already has feedback (id {existing_id}); send each image once")
        self.existing_id = existing_id


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    created_at: datetime
    image_sha256: str
    image_path: Path  # absolute
    label: int
    category: str
    predicted_category: str
    predicted_confidence: float
    confirmed: bool
    model_version: str
    request_id: str | None


class FeedbackStore:
    def __init__(self, url: str, images_dir: Path) -> None:
        self.images_dir = images_dir
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # SQLite: writers from several worker processes wait for each other instead of failing.
        sqlite_options = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, **sqlite_options)
        try:
            metadata.create_all(self.engine)
        except OperationalError:  # another worker created the table between check and create
            metadata.create_all(self.engine)  # checks first again: now a no-op, or the real error

    @classmethod
    def at(cls, directory: Path, url: str | None = None) -> "FeedbackStore":
        """The store in `directory` (images in `images/`), with SQLite there unless `url` names a database."""
        return cls(url or f"sqlite:///{directory / 'feedback.db'}", directory / "images")

    def add(self, image: bytes, sha256: str, image_format: str, **fields: Any) -> FeedbackRecord:
        """Save the image and its row; DuplicateFeedbackError if the image was already given feedback."""
        existing = self.find(sha256)
        if existing is not None:
            raise DuplicateFeedbackError(existing.id)
        relative = Path(sha256[:2]) / f"{sha256}{IMAGE_EXTENSIONS.get(image_format, '.img')}"
        target = self.images_dir / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as part:
                part.write_bytes(image)
        row = {"created_at": datetime.now(UTC), "image_sha256": sha256, "image_path": str(relative), **fields}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(feedback_table).values(**row))
        except IntegrityError:  # a concurrent request with the same image won the race
            found = self.find(sha256)
            if found is None:
                raise
            raise DuplicateFeedbackError(found.id) from None
        stored = self.find(sha256)
        assert stored is not None
        return stored

    def find(self, sha256: str) -> FeedbackRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(feedback_table).where(feedback_table.c.image_sha256 == sha256)
            ).first()
        return self.record(row._mapping) if row is not None else None

    def all(self) -> list[FeedbackRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(feedback_table).order_by(feedback_table.c.id)).all()
        return [self.record(row._mapping) for row in rows]

    def record(self, row: Any) -> FeedbackRecord:
        values = dict(row)
        values["image_path"] = self.images_dir / values["image_path"]
        return FeedbackRecord(**values)
