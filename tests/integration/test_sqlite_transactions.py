"""SQLite's transactions as the engine makes them: each SQLAlchemy transaction is one
SQLite transaction taken with the write lock (BEGIN IMMEDIATE), savepoints included;
autocommit connections take no transaction at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.adapters.persistence.engine import create_engine


def _engine(tmp_path: Path, pool_size: int) -> AsyncEngine:
    return create_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'keyhold.db'}",
        pool_size=pool_size,
        connect_timeout_seconds=5,
        statement_timeout_seconds=5,
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = _engine(tmp_path, pool_size=2)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine
    await engine.dispose()


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(text("SELECT name FROM t ORDER BY id")))


async def _add_then_fail(engine: AsyncEngine, name: str) -> None:
    async def add_then_fail() -> None:
        async with engine.connect() as connection, connection.begin():
            async with connection.begin_nested():  # SAVEPOINT … RELEASE
                await connection.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": name})
            raise RuntimeError("the rest of the work failed")

    with pytest.raises(RuntimeError):
        await add_then_fail()


async def test_a_released_savepoint_commits_nothing(engine: AsyncEngine) -> None:
    await _add_then_fail(engine, "lost")

    assert await _names(engine) == []


async def test_nor_after_the_connection_served_autocommit(tmp_path: Path) -> None:
    """SQLAlchemy gives the connection back sqlite3's own transaction control once an
    autocommit use ends; the transaction is still the engine's."""
    engine = _engine(tmp_path, pool_size=1)  # one connection: the same each time
    try:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
            await connection.execute(text("INSERT INTO t (name) VALUES ('kept')"))

        await _add_then_fail(engine, "lost")

        assert await _names(engine) == ["kept"]
    finally:
        await engine.dispose()


async def test_an_autocommit_connection_holds_no_lock(engine: AsyncEngine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as connection:
        await connection.execute(text("INSERT INTO t (name) VALUES ('at once')"))
        # Still open: a transaction of its own would hold the write lock until it ends,
        # and this one would wait the busy timeout out.
        async with asyncio.timeout(2), engine.begin() as other:
            names = await other.scalars(text("SELECT name FROM t"))
            assert list(names) == ["at once"]
            await other.execute(text("INSERT INTO t (name) VALUES ('meanwhile')"))

    assert await _names(engine) == ["at once", "meanwhile"]


async def test_transactions_that_read_then_write_take_turns(engine: AsyncEngine) -> None:
    """A deferred transaction reads on a snapshot, and its first write must then upgrade
    it: if another transaction wrote meanwhile, SQLite refuses at once (SQLITE_BUSY)
    instead of waiting. Transactions that hold the write lock from BEGIN wait their turn."""
    first_has_read = asyncio.Event()

    async def read_then_write(name: str, before_writing: asyncio.Event | None) -> None:
        async with engine.begin() as connection:
            count = await connection.scalar(text("SELECT count(*) FROM t"))
            if before_writing is not None:
                before_writing.set()
                await asyncio.sleep(0.2)  # the other transaction begins meanwhile
            await connection.execute(
                text("INSERT INTO t (name) VALUES (:n)"), {"n": f"{name} saw {count}"}
            )

    async def second() -> None:
        await first_has_read.wait()
        await read_then_write("second", None)

    async with asyncio.timeout(5):
        await asyncio.gather(read_then_write("first", first_has_read), second())

    assert await _names(engine) == ["first saw 0", "second saw 1"]
