"""Feedback from people who used a prediction: the image, its correct category, what the model said.

A source of labelled images for new data versions (`./tasks/data.sh add NAME --from BASE --feedback`).

Rows live in any SQLAlchemy database (SQLite under `data/feedback/` by default); the image is saved
beside it, written atomically before the row is committed, so a row never points at a missing or partial
image. What is saved is not the upload but the greyscale image the conversion works from
(`upload_views`, a PNG): no metadata, nothing hidden after the pixels, at most a few kilobytes, and
converted again it gives exactly the 28x28 input the model saw (the first of its views: a model that
also averages with a separated view saw that one too, which needs the colour the PNG does not keep).
It is named by the sha256 of its pixels, so the same picture sent as other bytes (a byte appended,
metadata changed) is still the same image, whatever the PNG encoder's version.

The same image cannot be given feedback twice: the same label again is a duplicate; a different one is
kept as a conflict for review, once per label. Only rows a reviewer accepted become training data
(`training_rows`), confirmations too: without a key on the endpoint anyone can confirm a wrong answer.
A review records the newest conflict its reviewer saw (by id: no clocks compared), so a conflict that
arrives later opens the row again.
"""

import hashlib
import io
import logging
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from api.feedback_schema import DEFAULT_DATABASE, open_engine, upgrade
from text_recognizer.atomic import atomic_path

logger = logging.getLogger("api")
DEFAULT_FEEDBACK_DIR = DEFAULT_DATABASE.parent
USAGE_CACHE_SECONDS = 10.0  # how stale the images folder's measured size may be for the quota
ACCEPTED, REJECTED = "accepted", "rejected"

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
# The tables as the newest migration leaves them (api/feedback_migrations; a test compares the two).
conflicts_table = Table(
    "feedback_conflicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("feedback_id", Integer, ForeignKey("feedback.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("label", Integer, nullable=False),
    Column("category", String(64), nullable=False),
    Column("request_id", String(64)),
    Index("feedback_conflicts_once", "feedback_id", "label", unique=True),  # once per image and label
)
reviews_table = Table(
    "feedback_reviews",
    metadata,
    Column("feedback_id", Integer, ForeignKey("feedback.id"), primary_key=True),
    Column("decision", String(16), nullable=False),  # accepted or rejected
    Column("label", Integer, nullable=False),  # the category the reviewer settled on
    Column("category", String(64), nullable=False),
    Column("reviewer", String(64), nullable=False),
    Column("reviewed_at", DateTime(timezone=True), nullable=False),
    Column("last_conflict_id", Integer),  # the newest conflict the reviewer saw; None: none
)


class DuplicateFeedbackError(ValueError):
    def __init__(self, existing_id: int) -> None:
        super().__init__(f"this image already has feedback (id {existing_id}); send each image once")
        self.existing_id = existing_id


class ConflictingFeedbackError(ValueError):
    def __init__(self, existing: "FeedbackRecord", category: str) -> None:
        super().__init__(
            f"this image already has feedback (id {existing.id}) saying {existing.category!r}; your "
            f"{category!r} is recorded as a conflict, and the image waits for a review"
        )
        self.existing_id = existing.id


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


@dataclass
class TrainingRows:
    """What feedback may become training data, and what was held back and why."""

    records: list[FeedbackRecord] = field(default_factory=list)  # labels as reviewed
    unreviewed: list[int] = field(default_factory=list)  # nobody has reviewed them
    conflicted: list[int] = field(default_factory=list)  # conflicting labels since the last review
    rejected: list[int] = field(default_factory=list)


class FeedbackStore:
    def __init__(self, url: str, images_dir: Path) -> None:
        self.images_dir = images_dir
        self.usage_bytes, self.usage_measured_at = 0, -USAGE_CACHE_SECONDS - 1.0
        self.engine: Engine = open_engine(url)
        upgrade(self.engine)

    @classmethod
    def at(cls, directory: Path, url: str | None = None) -> "FeedbackStore":
        """The store in `directory` (images in `images/`), with SQLite there unless `url` names a database."""
        return cls(url or f"sqlite:///{directory / DEFAULT_DATABASE.name}", directory / "images")

    def add(self, png: bytes, **fields: Any) -> FeedbackRecord:
        """Save the image (`png`, the working image) and its row. The image already has feedback:
        DuplicateFeedbackError for the same label or a conflict already recorded, ConflictingFeedbackError
        (the conflict recorded) for another."""
        sha256 = pixels_sha256(png)
        existing = self.find(sha256)
        if existing is not None:
            raise self.refusal(existing, fields)
        relative = Path(sha256[:2]) / f"{sha256}.png"
        target = self.images_dir / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as part:
                part.write_bytes(png)
            self.usage_bytes += len(png)
        row = {"created_at": datetime.now(UTC), "image_sha256": sha256, "image_path": str(relative), **fields}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(feedback_table).values(**row))
        except IntegrityError:  # a concurrent request with the same image won the race
            found = self.find(sha256)
            if found is None:
                raise
            raise self.refusal(found, fields) from None
        stored = self.find(sha256)
        assert stored is not None
        return stored

    def refusal(self, existing: FeedbackRecord, fields: dict[str, Any]) -> ValueError:
        """Agreeing with the label in use (the reviewer's, once accepted) or repeating a recorded
        conflict is a duplicate; anything else is recorded as a conflict."""
        review = self.reviews(existing.id).get(existing.id)
        in_use = review.label if review is not None and review.decision == ACCEPTED else existing.label
        recorded = [conflict.label for conflict in self.conflicts(existing.id).get(existing.id, [])]
        if fields["label"] == in_use or fields["label"] in recorded:  # at most 10 per image
            return DuplicateFeedbackError(existing.id)
        conflict = {
            "feedback_id": existing.id,
            "created_at": datetime.now(UTC),
            "label": fields["label"],
            "category": fields["category"],
            "request_id": fields.get("request_id"),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(conflicts_table).values(**conflict))
        except IntegrityError:  # the same conflict, sent at the same moment to another worker
            return DuplicateFeedbackError(existing.id)
        return ConflictingFeedbackError(existing, fields["category"])

    def stored_bytes(self) -> int:
        """The images folder's size, measured at most every few seconds (plus this process's writes)."""
        now = time.monotonic()
        if now - self.usage_measured_at > USAGE_CACHE_SECONDS:
            files = self.images_dir.glob("*/*") if self.images_dir.is_dir() else iter(())
            self.usage_bytes = sum(map(size_if_present, files))
            self.usage_measured_at = now
        return self.usage_bytes

    def review(
        self,
        ids: Iterable[int],
        decision: str,
        reviewer: str,
        label: int | None = None,
        category: str | None = None,
        seen: dict[int, int | None] | None = None,
    ) -> None:
        """Accept (with the sender's label, or `label`/`category`) or reject rows; a later review of a
        row replaces an earlier one. `seen`: the newest conflict id the reviewer saw, for rows decided
        from an earlier listing (for the others: the newest now). All rows, or none when an id is
        unknown."""
        records = [self.get(feedback_id) for feedback_id in ids]  # every id exists, or nothing is written
        newest = self.newest_conflicts()
        with self.engine.begin() as connection:
            for record in records:
                row = {
                    "feedback_id": record.id,
                    "decision": decision,
                    "reviewer": reviewer,
                    "reviewed_at": datetime.now(UTC),
                    "label": record.label if label is None else label,
                    "category": record.category if category is None else category,
                    "last_conflict_id": (
                        seen[record.id] if seen is not None and record.id in seen else newest.get(record.id)
                    ),
                }
                connection.execute(reviews_table.delete().where(reviews_table.c.feedback_id == record.id))
                connection.execute(insert(reviews_table).values(**row))

    def get(self, feedback_id: int) -> FeedbackRecord:
        with self.engine.connect() as connection:
            row = connection.execute(select(feedback_table).where(feedback_table.c.id == feedback_id)).first()
        if row is None:
            raise KeyError(f"no feedback with id {feedback_id} in {self.engine.url}")
        return self.record(row._mapping)

    def conflicts(self, feedback_id: int | None = None) -> dict[int, list[Any]]:
        """Each row's conflicts (id, label, category, ...), oldest first, by feedback id (or one row's)."""
        query = select(conflicts_table).order_by(conflicts_table.c.id)
        if feedback_id is not None:
            query = query.where(conflicts_table.c.feedback_id == feedback_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        found: dict[int, list[Any]] = {}
        for row in rows:
            found.setdefault(row.feedback_id, []).append(row)
        return found

    def newest_conflicts(self) -> dict[int, int]:
        """Each row's newest conflict id, by feedback id (rows without conflicts left out)."""
        query = select(conflicts_table.c.feedback_id, func.max(conflicts_table.c.id)).group_by(
            conflicts_table.c.feedback_id
        )
        with self.engine.connect() as connection:
            return {feedback_id: newest for feedback_id, newest in connection.execute(query).all()}

    def reviews(self, feedback_id: int | None = None) -> dict[int, Any]:
        query = select(reviews_table)
        if feedback_id is not None:
            query = query.where(reviews_table.c.feedback_id == feedback_id)
        with self.engine.connect() as connection:
            return {row.feedback_id: row for row in connection.execute(query).all()}

    def training_rows(self) -> TrainingRows:
        """Accepted rows, with the reviewer's label; everything else is held back and named."""
        rows, reviews, newest = TrainingRows(), self.reviews(), self.newest_conflicts()
        for record in self.all():
            review = reviews.get(record.id)
            seen = (review.last_conflict_id if review is not None else None) or 0
            if newest.get(record.id, 0) > seen:
                rows.conflicted.append(record.id)
            elif review is None:
                rows.unreviewed.append(record.id)
            elif review.decision == REJECTED:
                rows.rejected.append(record.id)
            else:
                rows.records.append(replace(record, label=review.label, category=review.category))
        return rows

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


def pixels_sha256(png: bytes) -> str:
    """What tells stored images apart: their mode, size and pixels, not how they were encoded."""
    with Image.open(io.BytesIO(png)) as image:
        header = f"{image.mode} {image.width}x{image.height}\n".encode()
        return hashlib.sha256(header + image.tobytes()).hexdigest()


def size_if_present(path: Path) -> int:
    """A file's size; 0 for a folder, or for a file gone since it was listed (another worker renames its
    `.part` images into place while this one sums: found in CI as a 503)."""
    try:
        status = path.stat()  # one system call: `is_file()` first would stat it twice
    except FileNotFoundError:
        return 0
    return status.st_size if stat.S_ISREG(status.st_mode) else 0
