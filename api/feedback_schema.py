"""The feedback store's schema, managed by Alembic migrations (`api/feedback_migrations/versions/`).

Opening a store upgrades it in place to the newest revision: every server worker, replica and tool does,
so each runs the upgrade under a lock (PostgreSQL: an advisory lock; SQLite: a lock file beside the
database) and finds nothing to do once one has. A store made before migrations existed (no version table)
is recognised by its tables and stamped with the revision it matches, then upgraded. The version table
has a name of its own, so the store may share a database with MLflow, whose tables Alembic manages too.

    python -m api.feedback_schema current|upgrade|history [--db URL]
    python -m api.feedback_schema revision -m "what changes"     # a new migration file, to fill in
"""

import argparse
import fcntl
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from text_recognizer.paths import PROJECT_ROOT

DEFAULT_DATABASE = PROJECT_ROOT / "data" / "feedback" / "feedback.db"
DB_URL_ENV = "APPAREL_FEEDBACK_DB_URL"  # the server's setting, also the review and data tools' default
SCRIPT_LOCATION = Path(__file__).with_name("feedback_migrations")
VERSION_TABLE = "feedback_schema_version"
ADVISORY_LOCK_KEY = 0x61707061  # any constant shared by every process that migrates the store
CONNECT_TIMEOUT_S = 5  # PostgreSQL
MIGRATION_WAIT_S = 30  # PostgreSQL: how long an opener waits for another one's migration


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg (version 3, in the serve extra), whatever SQLAlchemy's default."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def check_database_url(url: str) -> None:
    """ValueError naming what is wrong with `url` (never its password): not a URL, an unknown kind of
    database, or one whose driver is not installed."""
    try:
        make_url(engine_url(url)).get_dialect().import_dbapi()
    except NoSuchModuleError:  # a kind of ArgumentError
        raise ValueError(f"unknown kind of database {url.split(':', 1)[0]!r}") from None
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise ValueError("not a database URL (e.g. postgresql://user@host:5432/feedback)") from None
    except ImportError as error:
        raise ValueError(f"its driver is not installed: no module named {error.name!r}") from None


def open_engine(url: str) -> Engine:
    """An engine for the store at `url` (see `engine_url`); a SQLite file's folder is created."""
    url = engine_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # SQLite: writers from several worker processes wait for each other instead of failing. PostgreSQL:
    # an unreachable server fails the request (a 503) in seconds, not after TCP's two minutes.
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(url, connect_args=connect_args)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes.update(connection=connection, version_table=VERSION_TABLE)
    return config


@functools.cache  # the migration scripts are read once per process, not at every store opened
def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def migration_context(connection: Connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def current_revision(connection: Connection) -> str | None:
    return migration_context(connection).get_current_revision()


def revision_before_migrations(connection: Connection) -> str | None:
    """The revision a store made before migrations matches, from what its tables hold; None: empty."""
    schema = inspect(connection)
    tables = set(schema.get_table_names())
    if "feedback" not in tables:
        return None
    if "feedback_reviews" not in tables:
        return "0001"
    if "last_conflict_id" not in {column["name"] for column in schema.get_columns("feedback_reviews")}:
        return "0002"
    # 0004's named index: stores made between the constraint and the index had only the former.
    indexes = {index["name"] for index in schema.get_indexes("feedback_conflicts")}
    return "0004" if "feedback_conflicts_once" in indexes else "0003"


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that one process at a time holds, until after its commit (a lock
    let go before the commit let a second process migrate a store the first had not yet stamped)."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(f"{engine.url.database}.migration-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.begin() as connection:
                # Python's sqlite3 begins a transaction only before a data change, so schema changes
                # ran outside one: a migration failing half-way stayed half applied (found in review).
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection
    else:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # held until the transaction ends
                connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_WAIT_S}s'"))
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            yield connection


def upgrade(engine: Engine) -> None:
    """Bring the store to the newest revision (a no-op when it is there)."""
    with migration_transaction(engine) as connection:
        config = alembic_config(connection)
        if current_revision(connection) is None:
            before = revision_before_migrations(connection)
            if before is not None:
                command.stamp(config, before)
        if current_revision(connection) != head():
            command.upgrade(config, "head")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["current", "upgrade", "history", "revision"])
    parser.add_argument(
        "--db",
        default=os.environ.get(DB_URL_ENV) or f"sqlite:///{DEFAULT_DATABASE}",
        help=f"SQLAlchemy URL of the store (default: {DB_URL_ENV}, else SQLite under data/feedback)",
    )
    parser.add_argument("-m", "--message", help="revision: what the new migration changes")
    args = parser.parse_args(argv)
    if args.action == "history":
        command.history(alembic_config())
    elif args.action == "revision":
        if not args.message:
            parser.error("revision needs -m MESSAGE")
        number = f"{int(head()) + 1:04d}"
        command.revision(alembic_config(), args.message, rev_id=number)
    else:
        engine = open_engine(args.db)
        if args.action == "upgrade":
            upgrade(engine)
        with engine.connect() as connection:
            print(f"{engine.url!r}: revision {current_revision(connection)} (newest: {head()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
