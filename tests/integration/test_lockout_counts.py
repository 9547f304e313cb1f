"""Login failures counted under concurrency, on SQLite and PostgreSQL: every failure is
counted exactly once (no lost update), and the lockout engages at the threshold with the
cooldown the count earns."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.migrate import migrate
from keyhold.domain.identity.lockout import LockoutPolicy
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.databases import postgres_database
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[SqlLoginFailureStore]:
    key = base64.b64encode(os.urandom(32)).decode()
    database = Database(
        create_engine(settings_for(tmp_path, database_url)), AeadKeyRing.parse(f"k1:{key}")
    )
    await migrate(database.engine)
    try:
        yield SqlLoginFailureStore(database)
    finally:
        await database.dispose()


async def test_concurrent_failures_are_each_counted_once(store: SqlLoginFailureStore) -> None:
    policy = LockoutPolicy(threshold=5)
    at = datetime.now(UTC)
    writers = 50
    counts = await asyncio.gather(
        *(store.record_failure("account:a|peer:p", at, policy, 5) for _ in range(writers))
    )
    # Each increment saw its own value: 1..50, none lost, none seen twice.
    assert sorted(count.failures for count in counts) == list(range(1, writers + 1))
    (stored,) = await store.counts(["account:a|peer:p"])
    assert stored.failures == writers
    # The lock only ever grows: the longest cooldown earned wins, whatever the order.
    assert stored.locked_until == at + policy.cooldown(writers, 5)


async def test_concurrent_wrong_passwords_lock_at_the_threshold(
    tmp_path: Path, database_url: str | None
) -> None:
    threshold, attempts = 5, 20
    settings = settings_for(
        tmp_path,
        database_url,
        rate_limits_enabled=False,
        lockout_threshold=threshold,
        lockout_peer_threshold=1000,  # only the account's count is under test
        password_hash_workers=4,  # verifications really overlap
    )
    async with running_server(settings) as (app, channel):
        await signed_in(app, "ada@example.com")
        identity = pb_grpc.IdentityServiceStub(channel)
        wrong = pb.CreateSessionRequest(email="ada@example.com", password="wrong passphrase!")
        results = await asyncio.gather(
            *(identity.CreateSession(wrong, timeout=30) for _ in range(attempts)),
            return_exceptions=True,
        )
        assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
        reasons = [rich_error(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
        failed = reasons.count("INVALID_CREDENTIALS")
        # Calls that checked after the fifth failure was stored were refused unverified.
        assert failed + reasons.count("LOGIN_LOCKED") == attempts
        assert failed >= threshold

        store = SqlLoginFailureStore(app.database)
        account, whole_peer = await store.counts(
            ["account:ada@example.com|peer:127.0.0.1", "peer:127.0.0.1"]
        )
        assert account.failures == failed  # every verified failure counted, exactly once
        assert whole_peer.failures == failed
        async with app.database.engine.connect() as connection:
            denied = await connection.scalar(
                text(
                    "SELECT count(*) FROM audit_events WHERE action = 'identity.session.create' "
                    "AND outcome = 'denied' AND reason = 'INVALID_CREDENTIALS'"
                )
            )
        assert denied == failed

        # The right password is refused now, for the cooldown the count earned.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.CreateSession(
                pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
            )
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")
        assert error.retry_info is not None
        earned = LockoutPolicy(threshold=threshold).cooldown(failed, threshold)
        assert (
            earned - timedelta(seconds=15)
            <= (timedelta(seconds=error.retry_info.retry_delay.seconds))
            <= earned
        )
        print(f"{attempts} concurrent wrong passwords: {failed} counted, cooldown {earned}")
