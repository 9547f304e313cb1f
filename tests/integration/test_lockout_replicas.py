"""Two replicas on one PostgreSQL database, sharing Redis for their rate limits: parallel
guesses at one account, sent to both, never reach the hasher more often than the
lockout threshold, whether Redis answers, refuses connections or hangs. The rate
limiter fails open when Redis fails; the lockout, kept in the database, does not: a
storage fault may slow logins, it never lets a guess go uncounted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis

from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailureStore
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.proxy import CuttableProxy
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
THRESHOLD, GUESSES = 5, 60
EMAIL = "ada@example.com"


async def _redis_database() -> int:
    """A Redis database number in 8..15; fails under CI and skips elsewhere when Redis
    is unreachable."""
    number = secrets.randbelow(8) + 8
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    try:
        await client.ping()
        await client.flushdb()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI and is unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    finally:
        await client.aclose()
    return number


Replicas = tuple[tuple[KeyholdServer, grpc.aio.Channel], ...]


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    """Redis, reached by both replicas through a proxy the test can cut or hang."""
    proxy = CuttableProxy(REDIS_HOST, REDIS_PORT)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def replicas(tmp_path: Path, proxy: CuttableProxy) -> AsyncIterator[Replicas]:
    number = await _redis_database()
    keys = "k1:" + base64.b64encode(os.urandom(32)).decode()  # one ring for both
    async with postgres_database() as url, contextlib.AsyncExitStack() as stack:
        started = []
        for name in ("a", "b"):
            settings = settings_for(
                tmp_path / name,
                url,
                redis_url=f"redis://127.0.0.1:{proxy.port}/{number}",
                key_encryption_keys=keys,
                lockout_threshold=THRESHOLD,
                lockout_peer_threshold=1000,  # only the account's count for this peer
                lockout_account_threshold=1000,
                password_hash_workers=2,
            )
            started.append(await stack.enter_async_context(running_server(settings)))
        yield tuple(started)
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        try:
            await client.flushdb()
        finally:
            await client.aclose()


async def _guess(channel: grpc.aio.Channel, password: str) -> str:
    try:
        await pb_grpc.IdentityServiceStub(channel).CreateSession(
            pb.CreateSessionRequest(email=EMAIL, password=password), timeout=60
        )
    except grpc.aio.AioRpcError as error:
        return rich_error(error).reason or error.code().name
    return "OK"


@pytest.mark.parametrize("redis_state", ["answering", "refusing", "hung"])
async def test_parallel_guesses_on_two_replicas_never_pass_the_threshold(
    replicas: Replicas, proxy: CuttableProxy, redis_state: str
) -> None:
    (app, _), _ = replicas
    await signed_in(app, EMAIL)
    if redis_state == "refusing":
        proxy.cut()
    elif redis_state == "hung":
        proxy.hang()
    channels = [channel for _, channel in replicas]
    outcomes = await asyncio.gather(
        *(_guess(channels[index % 2], "wrong passphrase!") for index in range(GUESSES))
    )
    evaluated = outcomes.count("INVALID_CREDENTIALS")
    assert evaluated == THRESHOLD, outcomes
    assert set(outcomes) <= {"INVALID_CREDENTIALS", "LOGIN_LOCKED", "RATE_LIMITED"}, outcomes
    if redis_state != "answering":  # the limiter failed open: the lockout did it all
        assert outcomes.count("LOGIN_LOCKED") == GUESSES - THRESHOLD
    # Every verified guess is counted, once, in the database both replicas share.
    (pair,) = await SqlLoginFailureStore(app.platform.database).counts(
        [f"account:{EMAIL}|peer:127.0.0.1"]
    )
    assert pair.failures == THRESHOLD
    # The right password is refused on both replicas now (by the lockout, or first by
    # the rate limit while Redis answers).
    refusals = {"LOGIN_LOCKED", "RATE_LIMITED"} if redis_state == "answering" else {"LOGIN_LOCKED"}
    for channel in channels:
        assert await _guess(channel, PASSWORD) in refusals
