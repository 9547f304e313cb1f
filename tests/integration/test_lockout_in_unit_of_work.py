"""A login's lockout writes ride its units of work, on SQLite and PostgreSQL: a
reservation or a give-back made in a unit of work takes effect with its commit, and
with its rollback never happened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWork
from keyhold.domain.identity.lockout import LockoutPolicy, Reservation, Scope
from tests.support.audit import audit_stack
from tests.support.databases import postgres_database

POLICY = LockoutPolicy()
COUNTERS = POLICY.counters("ada@example.com", "192.0.2.1")
KEYS = [counter.key for counter in COUNTERS]
_SEALER = AeadSealer(AeadKeyRing([("k1", bytes(32))]))  # nothing here is sealed


class _RolledBack(Exception):
    pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        async with audit_stack(tmp_path, None) as stack:
            yield stack.database
    else:
        async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
            yield stack.database


async def _failures(database: Database) -> list[int]:
    return [count.failures for count in await SqlLoginFailureStore(database).counts(KEYS)]


async def _reserve(database: Database, at: datetime, *, commit: bool) -> None:
    async with SqlUnitOfWork(database, _SEALER) as uow:
        reservation = await uow.login_failures.reserve(COUNTERS, at, POLICY.forget_after)
        assert reservation.granted
        if not commit:
            raise _RolledBack


async def _give_back(database: Database, reservation: Reservation, *, commit: bool) -> None:
    async with SqlUnitOfWork(database, _SEALER) as uow:
        await uow.login_failures.release(reservation, reset=Scope.ACCOUNT_PEER)
        if not commit:
            raise _RolledBack


async def test_a_reservation_counts_from_its_commit_and_not_after_a_rollback(
    database: Database,
) -> None:
    at = datetime.now(UTC)
    with pytest.raises(_RolledBack):
        await _reserve(database, at, commit=False)
    assert await _failures(database) == [0, 0, 0]

    await _reserve(database, at, commit=True)
    assert await _failures(database) == [1, 1, 1]


async def test_a_give_back_applies_with_its_commit_and_not_after_a_rollback(
    database: Database,
) -> None:
    store = SqlLoginFailureStore(database)
    at = datetime.now(UTC)
    await store.reserve(COUNTERS, at, POLICY.forget_after)
    reservation = await store.reserve(COUNTERS, at, POLICY.forget_after)
    with pytest.raises(_RolledBack):
        await _give_back(database, reservation, commit=False)
    assert await _failures(database) == [2, 2, 2]

    await _give_back(database, reservation, commit=True)
    assert await _failures(database) == [0, 1, 1]


async def test_a_non_atomic_unit_of_work_keeps_each_write(database: Database) -> None:
    """`atomic=False` commits each statement as it runs (no BEGIN, no COMMIT)."""
    at = datetime.now(UTC)

    async def reserve_then_fail() -> None:
        async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
            assert (await uow.login_failures.reserve(COUNTERS, at, POLICY.forget_after)).granted
            raise _RolledBack

    with pytest.raises(_RolledBack):
        await reserve_then_fail()
    assert await _failures(database) == [1] * len(KEYS)
