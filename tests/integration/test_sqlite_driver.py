"""The embedded SQLite engine runs each statement in one call on the connection's thread,
and still answers as a DBAPI cursor should: rows, row counts, last row ids, many
parameter sets, and errors translated as before."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from tests.support.servers import settings_for


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(tmp_path))
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        )
    yield engine
    await engine.dispose()


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls handed to aiosqlite connections' threads, by function name."""
    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_statement_is_one_call_on_the_connection_thread(
    engine: AsyncEngine, thread_calls: list[str]
) -> None:
    async with engine.connect() as connection:
        thread_calls.clear()
        rows = (await connection.execute(text("SELECT 1 AS one, 'x' AS two"))).all()
        assert [tuple(row) for row in rows] == [(1, "x")]
        assert len(thread_calls) == 1, thread_calls  # SQLAlchemy's own adapter makes four


async def test_rows_counts_and_row_ids(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1
        await connection.execute(
            text("INSERT INTO t (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}]
        )
        updated = await connection.execute(text("UPDATE t SET name = name || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        returned = await connection.execute(
            text("UPDATE t SET name = 'z' WHERE id = 3 RETURNING id, name")
        )
        assert [tuple(row) for row in returned] == [(3, "z")]
        names = (await connection.execute(text("SELECT name FROM t ORDER BY id"))).scalars()
        assert list(names) == ["a", "b!", "z"]
        nothing = await connection.execute(text("SELECT name FROM t WHERE id = 99"))
        assert nothing.first() is None


async def _in_one_transaction(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


async def test_errors_are_translated_and_the_transaction_rolls_back(engine: AsyncEngine) -> None:
    await _in_one_transaction(engine, "INSERT INTO t (name) VALUES ('a')")
    with pytest.raises(IntegrityError):
        await _in_one_transaction(
            engine, "INSERT INTO t (name) VALUES ('b')", "INSERT INTO t (name) VALUES ('a')"
        )
    with pytest.raises(OperationalError):
        await _in_one_transaction(engine, "SELECT * FROM no_such_table")
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM t"))).scalars()
        assert list(names) == ["a"]  # the failed transaction left nothing


def _names(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT name FROM t ORDER BY id")]


async def test_a_one_trip_transaction_is_one_call_and_all_or_nothing(
    engine: AsyncEngine, thread_calls: list[str]
) -> None:
    database = Database(engine, AeadKeyRing.parse(f"k1:{base64.b64encode(bytes(32)).decode()}"))

    def add_two(connection: sqlite3.Connection) -> list[str]:
        connection.execute("INSERT INTO t (name) VALUES ('a')")
        connection.execute("INSERT INTO t (name) VALUES ('b')")
        return _names(connection)

    def add_then_collide(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO t (name) VALUES ('c')")
        connection.execute("INSERT INTO t (name) VALUES ('a')")

    async with database.autocommit():  # the pool's connection is made and set up first
        pass
    thread_calls.clear()
    assert await database.one_trip_transaction(add_two) == ["a", "b"]
    work_calls = [call for call in thread_calls if "_immediate_transaction" in call]
    assert len(work_calls) == 1, thread_calls  # BEGIN, both inserts and COMMIT: one call
    assert "_execute_one" not in thread_calls  # no statement went on its own
    with pytest.raises(IntegrityError):  # sqlite3's error, as SQLAlchemy's
        await database.one_trip_transaction(add_then_collide)
    assert await database.one_trip_transaction(_names) == ["a", "b"]  # no 'c'


async def test_a_one_trip_transaction_is_seen_through_a_cancellation(
    engine: AsyncEngine,
) -> None:
    database = Database(engine, AeadKeyRing.parse(f"k1:{base64.b64encode(bytes(32)).decode()}"))
    started = threading.Event()

    def slow_insert(connection: sqlite3.Connection) -> str:
        connection.execute("INSERT INTO t (name) VALUES ('kept')")
        started.set()
        time.sleep(0.3)
        return "done"

    call = asyncio.ensure_future(database.one_trip_transaction(slow_insert))
    await asyncio.to_thread(started.wait, 5)
    call.cancel()
    assert await call == "done"  # the cancellation came after the work was sent: dropped
    assert await database.one_trip_transaction(_names) == ["kept"]
