"""A client that cancels, or whose deadline passes, stops the server's database work:
the statement it was waiting on is cancelled in PostgreSQL at once, nothing is written,
the audit trail says CANCELLED, and no pooled connection is lost on the way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.databases import postgres_database
from tests.support.servers import PASSWORD, running_server, settings_for

pytestmark = pytest.mark.postgres

POOL_SIZE = 4
# Statements of the server's (application_name 'keyhold') waiting for a lock.
WAITING = """
    SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE NOT l.granted AND a.application_name = 'keyhold' AND a.datname = current_database()
"""


def _create(email: str) -> pb.CreateUserRequest:
    return pb.CreateUserRequest(email=email, password=PASSWORD, display_name="C")


async def _waiters(monitor: asyncpg.Connection) -> list[int]:
    # pg_locks is read live on every call (pg_stat_activity would be cached per
    # transaction; the monitor runs none).
    return [row["pid"] for row in await monitor.fetch(WAITING)]


async def _until(monitor: asyncpg.Connection, waiting: bool, within: float) -> float:
    started = time.monotonic()
    while bool(await _waiters(monitor)) is not waiting:
        if time.monotonic() - started > within:
            raise AssertionError(f"server statements waiting: expected {waiting} in {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def locked(
    tmp_path: Path,
) -> AsyncIterator[tuple[pb_grpc.IdentityServiceStub, asyncpg.Connection, str]]:
    """A server whose `users` table is write-locked by another session (reads pass)."""
    async with postgres_database() as url:
        settings = settings_for(
            tmp_path,
            url,
            rate_limits_enabled=False,
            database_pool_size=POOL_SIZE,
            # Far beyond the test: only the client's cancellation can end the wait.
            database_statement_timeout_seconds=120,
        )
        async with running_server(settings) as (_, channel):
            identity = pb_grpc.IdentityServiceStub(channel)
            await identity.CreateUser(_create("first@example.com"))  # warm the pool
            dsn = url.replace("+asyncpg", "")
            holder, monitor = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
            try:
                async with holder.transaction():
                    await holder.execute("LOCK TABLE users IN EXCLUSIVE MODE")
                    yield identity, monitor, url
            finally:
                await holder.close()
                await monitor.close()


async def test_a_cancelled_call_cancels_its_statement(
    locked: tuple[pb_grpc.IdentityServiceStub, asyncpg.Connection, str],
) -> None:
    identity, monitor, url = locked
    call = identity.CreateUser(_create("cancelled@example.com"))
    pending = asyncio.ensure_future(call)
    await _until(monitor, waiting=True, within=5)  # the INSERT waits for the lock
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    gone = await _until(monitor, waiting=False, within=2)
    print(f"the server's statement stopped waiting {gone * 1000:.0f} ms after the cancel")

    # Recorded as the cancelled call it was, and nothing was written.
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        records: list[tuple[str, str]] = []
        async with asyncio.timeout(5):
            while len(records) < 4:
                rows = await connection.fetch(
                    "SELECT outcome, reason FROM audit_events "
                    "WHERE action = 'identity.user.create' ORDER BY sequence"
                )
                records = [(row["outcome"], row["reason"]) for row in rows]
        assert records == [
            ("attempted", ""),
            ("succeeded", ""),  # first@example.com
            ("attempted", ""),
            ("failed", "CANCELLED"),
        ]
        emails = await connection.fetch("SELECT email FROM users")
        assert [row["email"] for row in emails] == ["first@example.com"]
    finally:
        await connection.close()


async def test_a_passed_deadline_cancels_its_statement(
    locked: tuple[pb_grpc.IdentityServiceStub, asyncpg.Connection, str],
) -> None:
    identity, monitor, _ = locked
    started = time.monotonic()
    pending = asyncio.ensure_future(identity.CreateUser(_create("late@example.com"), timeout=1.0))
    await _until(monitor, waiting=True, within=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pending
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(monitor, waiting=False, within=2)
    assert time.monotonic() - started < 3.0


async def test_cancelled_calls_leak_no_pooled_connection(
    locked: tuple[pb_grpc.IdentityServiceStub, asyncpg.Connection, str],
) -> None:
    """Three times the pool's size in cancelled calls, then the pool still serves."""
    identity, monitor, _ = locked
    for index in range(3 * POOL_SIZE):
        call = identity.CreateUser(_create(f"gone{index}@example.com"))
        pending = asyncio.ensure_future(call)
        await _until(monitor, waiting=True, within=5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await _until(monitor, waiting=False, within=2)
    # Reads still get connections while the lock is held, within a second each.
    for _ in range(2 * POOL_SIZE):
        await identity.GetJwks(pb.GetJwksRequest(), timeout=1.0)
