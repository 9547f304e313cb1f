"""Engine construction for the two supported databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keyhold.adapters.private_files import private_directory, private_sqlite_database


def create_engine(
    database_url: str,
    *,
    pool_size: int,
    connect_timeout_seconds: float,
    statement_timeout_seconds: float,
    private_data_dir: Path | None = None,
) -> AsyncEngine:
    """`hide_parameters`: a statement's values (emails, hashes, sealed credentials) stay
    out of error messages, and so out of logged tracebacks. `private_data_dir`, and an
    SQLite database with its sidecar files, are made private first (`private_files`)."""
    if private_data_dir is not None:
        private_directory(private_data_dir)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url.database, pool_size, connect_timeout_seconds)
    return create_async_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=0,
        # No pre-ping (a round trip per checkout): a connection that turns out dead
        # raises a disconnect error, which invalidates the whole pool at once.
        pool_timeout=connect_timeout_seconds,
        connect_args={
            "timeout": connect_timeout_seconds,
            "command_timeout": statement_timeout_seconds,
            "server_settings": {"application_name": "keyhold"},
        },
    )


def _sqlite_engine(
    database: str | None, pool_size: int, connect_timeout_seconds: float
) -> AsyncEngine:
    """A file database keeps a fixed pool: SQLAlchemy's default lets ten connections
    overflow its five, and each overflow connection (a thread, an open, the pragmas, a
    schema parse) was made and closed again for every burst of calls."""
    pool: dict[str, Any] = {}
    if database and database != ":memory:":  # in memory: one shared connection
        private_sqlite_database(Path(database))
        pool = {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": connect_timeout_seconds,
        }
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database or ':memory:'}", hide_parameters=True, **pool
    )
    _transactions_begin_immediately(engine)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


# An execution option: a connection with it set runs each statement on its own (see
# `statements_commit_alone`).
_STATEMENTS_COMMIT_ALONE = "keyhold_statements_commit_alone"


def statements_commit_alone(engine: AsyncEngine) -> AsyncEngine:
    """`engine`, handing out connections on which each statement commits on its own: no
    BEGIN and COMMIT round trips.

    PostgreSQL: SQLAlchemy's AUTOCOMMIT isolation level. SQLite: the engine's
    connections are kept out of sqlite3's own transaction control, so a connection whose
    SQLAlchemy transactions send no BEGIN already commits statement by statement;
    switching the isolation level instead would cost round trips to the connection's
    thread at every checkout and return."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_STATEMENTS_COMMIT_ALONE: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _transactions_begin_immediately(engine: AsyncEngine) -> None:
    """Every SQLAlchemy transaction on `engine` is one SQLite transaction, begun with
    BEGIN IMMEDIATE; connections on which statements commit alone begin none.

    SQLAlchemy's documented recipe for pysqlite and aiosqlite: sqlite3's own transaction
    control is switched off (it sends BEGIN only before a DML statement, so a SAVEPOINT
    opened first ran outside any transaction and its release committed at once) and the
    BEGIN is sent on the engine's "begin" event instead. (SQLAlchemy switches sqlite3's
    control back on when a connection's autocommit use ends; inside a transaction
    already begun it sends nothing, so the BEGIN here still decides.) IMMEDIATE takes
    the write lock at the start: a transaction that read first and wrote later would
    have to upgrade its snapshot, which SQLite refuses with SQLITE_BUSY rather than
    wait."""

    @event.listens_for(engine.sync_engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") != "AUTOCOMMIT" and not options.get(
            _STATEMENTS_COMMIT_ALONE
        ):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
