"""The feedback store's schema as Alembic migrations: stores of every earlier revision, and stores made
before migrations existed, are upgraded in place with their rows; the migrated schema is the one the code
queries; concurrent openers migrate once. Each test runs on SQLite and PostgreSQL (conftest.feedback_db)."""

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import alembic.op
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    inspect,
    text,
)
from sqlalchemy.exc import OperationalError

import api.feedback_schema
from api.feedback_schema import (
    ADVISORY_LOCK_KEY,
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head,
    main,
    migration_context,
    open_engine,
    revision_before_migrations,
)
from api.feedback_store import FeedbackStore, conflicts_table, feedback_table, metadata, reviews_table

from .support.postgres import PostgresCluster

REVISIONS = ["0001", "0002", "0003", "0004"]
ROW = {
    "created_at": datetime(2026, 11, 1, tzinfo=UTC),
    "image_sha256": "ab" * 32,
    "image_path": "ab/one.png",
    "label": 9,
    "category": "Ankle boot",
    "predicted_category": "Sandal",
    "predicted_confidence": 0.8,
    "confirmed": False,
    "model_version": "c5f2a5d82bcc",
    "request_id": "r-1",
}


@pytest.fixture
def url(feedback_db: str | None, tmp_path: Path) -> str:
    return feedback_db or f"sqlite:///{tmp_path / 'feedback.db'}"


def store_at_revision(url: str, revision: str, versioned: bool = True) -> None:
    """A store as the code of `revision` left it, holding one row; `versioned=False`: as made before
    migrations existed, with no version table."""
    engine = open_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
        columns = ", ".join(ROW)
        connection.execute(text(f"INSERT INTO feedback ({columns}) VALUES (:{', :'.join(ROW)})"), ROW)
        if not versioned:
            connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    engine.dispose()


def test_the_migrations_make_the_schema_the_code_queries(url: str) -> None:
    """Alembic's own comparison of the migrated database with the tables in api/feedback_store.py."""
    engine = FeedbackStore(url, Path("unused")).engine
    with engine.connect() as connection:
        assert current_revision(connection) == head() == REVISIONS[-1]
        assert compare_metadata(migration_context(connection), metadata) == []


@pytest.mark.parametrize("versioned", [True, False], ids=["migrated", "made-before-migrations"])
@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_an_older_store_is_upgraded_in_place_with_its_rows(url: str, revision: str, versioned: bool) -> None:
    store_at_revision(url, revision, versioned)
    if not versioned:
        with open_engine(url).connect() as connection:
            assert revision_before_migrations(connection) == revision
    store = FeedbackStore(url, Path("unused"))
    with store.engine.connect() as connection:
        assert current_revision(connection) == head()
    (record,) = store.all()
    assert (record.id, record.category, record.model_version) == (1, "Ankle boot", "c5f2a5d82bcc")
    store.review([1], "accepted", "reviewer")  # 0003's column and 0004's index are in use
    assert store.reviews()[1].last_conflict_id is None
    indexes = inspect(store.engine).get_indexes("feedback_conflicts")
    assert any(index["unique"] and index["column_names"] == ["feedback_id", "label"] for index in indexes)


def test_every_migration_goes_down_and_up_again(url: str) -> None:
    engine = FeedbackStore(url, Path("unused")).engine
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
        assert set(inspect(connection).get_table_names()) <= {VERSION_TABLE}
        command.upgrade(alembic_config(connection), "head")
        assert current_revision(connection) == head()


def test_servers_opening_a_new_store_at_once_migrate_it_once(url: str) -> None:
    """Workers and replicas open the store when they first take feedback, maybe at the same moment."""
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            FeedbackStore(url, Path("unused"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_engine(url).connect() as connection:
        assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [
            "0004"
        ]


def test_the_command_line_reports_and_upgrades(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store_at_revision(url, "0002")
    assert main(["current", "--db", url]) == 0
    assert "revision 0002 (newest: 0004)" in capsys.readouterr().out
    assert main(["upgrade", "--db", url]) == 0
    assert "revision 0004 (newest: 0004)" in capsys.readouterr().out


def test_a_store_made_by_the_code_before_migrations_with_its_unique_constraint_is_upgraded(url: str) -> None:
    """Found in review: a store made from the tables as they were defined before migrations (conflicts
    unique by a table constraint, without 0004's named index) was taken for the newest revision."""
    before = MetaData()
    for table in (feedback_table, reviews_table):
        table.to_metadata(before)
    Table(
        "feedback_conflicts",
        before,
        Column("id", Integer, primary_key=True),
        Column("feedback_id", Integer, ForeignKey("feedback.id"), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("label", Integer, nullable=False),
        Column("category", String(64), nullable=False),
        Column("request_id", String(64)),
        UniqueConstraint("feedback_id", "label"),
    )
    engine = open_engine(url)
    before.create_all(engine)
    with engine.connect() as connection:
        assert revision_before_migrations(connection) == "0003"
    engine.dispose()
    store = FeedbackStore(url, Path("unused"))
    indexes = {index["name"] for index in inspect(store.engine).get_indexes("feedback_conflicts")}
    assert "feedback_conflicts_once" in indexes


def test_repeated_conflicts_from_before_the_rule_are_removed_by_its_migration(url: str) -> None:
    store_at_revision(url, "0003")
    engine = open_engine(url)
    with engine.begin() as connection:
        for label in (5, 5, 7, 5):  # Sandal three times, Sneaker once
            row = {"feedback_id": 1, "created_at": ROW["created_at"], "label": label, "category": str(label)}
            connection.execute(insert(conflicts_table).values(**row))
    engine.dispose()
    store = FeedbackStore(url, Path("unused"))
    assert [(row.id, row.label) for row in store.conflicts()[1]] == [(1, 5), (3, 7)]


def test_a_migration_that_fails_half_way_leaves_the_store_as_it_was(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: on SQLite each schema change committed on its own, so a failure after the first
    left a column added under the old revision, and every later open failed."""
    store_at_revision(url, "0002")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(alembic.op, "create_index", fail)  # 0004's step, after 0003's column
    with pytest.raises(RuntimeError, match="disk filled up"):
        FeedbackStore(url, Path("unused"))
    engine = open_engine(url)
    with engine.connect() as connection:
        assert current_revision(connection) == "0002"
        assert "last_conflict_id" not in {
            c["name"] for c in inspect(connection).get_columns("feedback_reviews")
        }
    monkeypatch.undo()
    assert len(FeedbackStore(url, Path("unused")).all()) == 1


def test_an_opener_waits_a_bounded_time_for_another_ones_migration(
    postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: while another process holds the migration lock (a migration hung, say), an opener
    gives up after MIGRATION_WAIT_S instead of waiting forever on a worker thread."""
    url = postgres.create_database("held_lock")
    monkeypatch.setattr(api.feedback_schema, "MIGRATION_WAIT_S", 1)
    holding = open_engine(url)
    with holding.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            FeedbackStore(url, Path("unused"))
        assert time.monotonic() - started < 10
    holding.dispose()  # the session, and the lock it held, end with the connection
    assert FeedbackStore(url, Path("unused")).all() == []


def test_the_storage_quota_skips_an_image_renamed_while_it_sums(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in CI: another replica renamed its `.part` image into place between the listing and the
    size check, and the feedback request got a 503 instead of the rest being counted."""
    store = FeedbackStore(url, tmp_path / "images")
    kept = store.images_dir / "ab" / "kept.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x" * 100)

    class Renamed(type(kept)):  # type: ignore[misc]
        """A `.part` file that is there when checked and renamed before its size is read."""

        def is_file(self) -> bool:
            return True

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            raise FileNotFoundError(2, "No such file or directory", str(self))

    listing = [kept, Renamed(kept.with_name(".gone.png.part"))]
    monkeypatch.setattr(type(store.images_dir), "glob", lambda self, pattern: iter(listing))
    assert store.stored_bytes() == 100
