"""A unit of work cancelled while it commits sees its commit through, so that the caller
(and the audit outcome after it) knows what happened; cancelled before the commit, or
failing, it rolls back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncTransaction

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import login_failures, users
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWork
from keyhold.domain.identity.users import User, UserState
from tests.support.audit import audit_stack
from tests.support.databases import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        async with audit_stack(tmp_path, None) as stack:
            yield stack.database
    else:
        async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
            yield stack.database


_SEALER = AeadSealer(AeadKeyRing([("k1", bytes(32))]))  # nothing here is sealed


def _unit_of_work(database: Database) -> SqlUnitOfWork:
    return SqlUnitOfWork(database, _SEALER)


async def _write(uow: SqlUnitOfWork) -> None:
    row = {"key": "k" * 64, "failures": 1, "updated_at": datetime.now(UTC)}
    await uow.connection.execute(insert(login_failures).values(**row))


async def _count(database: Database, table: object = login_failures) -> int:
    async with _unit_of_work(database) as uow:
        statement = select(func.count()).select_from(table)  # type: ignore[arg-type]
        return int((await uow.connection.execute(statement)).scalar_one())


async def test_cancelled_during_the_commit_the_commit_is_seen_through(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committing = asyncio.Event()
    commit = AsyncTransaction.commit

    async def slow_commit(self: AsyncTransaction) -> None:
        committing.set()
        await asyncio.sleep(0.2)  # the cancellation lands here
        await commit(self)

    async def work() -> str:
        uow = _unit_of_work(database)
        async with uow:
            await _write(uow)
            monkeypatch.setattr(AsyncTransaction, "commit", slow_commit)
        return "finished"  # the cancellation was dropped: the work is done

    task = asyncio.create_task(work())
    await asyncio.wait_for(committing.wait(), 5)
    task.cancel()
    assert await asyncio.wait_for(task, 5) == "finished"
    assert task.cancelling() == 0
    monkeypatch.undo()
    assert await _count(database) == 1


async def test_cancelled_before_the_commit_it_rolls_back(database: Database) -> None:
    written = asyncio.Event()

    async def work() -> None:
        uow = _unit_of_work(database)
        async with uow:
            await _write(uow)
            written.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await asyncio.wait_for(written.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert await _count(database) == 0


async def test_a_failed_unit_of_work_leaves_no_user(database: Database) -> None:
    """On SQLite too: `users.add` opens and releases a SAVEPOINT, which must not commit
    the row before the unit of work does."""
    now = datetime.now(UTC)
    user = User("ada", "ada@example.com", "A", "x", False, UserState.ACTIVE, frozenset(), now, now)

    async def add_then_fail() -> None:
        async with _unit_of_work(database) as uow:
            await uow.users.add(user)
            raise RuntimeError("the rest of the work failed")

    with pytest.raises(RuntimeError):
        await add_then_fail()
    assert await _count(database, users) == 0
