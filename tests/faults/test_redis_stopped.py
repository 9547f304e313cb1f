"""Redis, the shared rate-limit store, hung and then killed under a running server: rate
limiting fails open (calls keep succeeding, each delayed by at most the store's timeout),
the login lockout, kept in the database, still holds, and limits are enforced again once
Redis is back. The test runs its own `redis-server`; the shared one is not touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.cli import free_port
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error

pytestmark = pytest.mark.redis


class OwnRedis:
    """`redis-server` on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._directory = directory
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is required under CI and is not installed")
            pytest.skip("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self._directory)]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except (OSError, redis.RedisError):
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 5)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def _reset_password(identity: pb_grpc.IdentityServiceStub) -> tuple[grpc.StatusCode, float]:
    """ResetPassword with a bogus token (10/minute per peer): INVALID_ARGUMENT when let
    through, RESOURCE_EXHAUSTED when throttled."""
    started = time.monotonic()
    try:
        await identity.ResetPassword(
            pb.ResetPasswordRequest(reset_token="khp_bogus", new_password=PASSWORD), timeout=5
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), time.monotonic() - started
    raise AssertionError("a bogus reset token was accepted")


async def _calls(identity: pb_grpc.IdentityServiceStub, count: int) -> list[grpc.StatusCode]:
    return [(await _reset_password(identity))[0] for _ in range(count)]


async def _locked_out(app: KeyholdServer, channel: grpc.aio.Channel, email: str) -> None:
    """Five wrong passwords, then the right one is refused: LOGIN_LOCKED."""
    await signed_in(app, email)
    identity = pb_grpc.IdentityServiceStub(channel)
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.CreateSession(
                pb.CreateSessionRequest(email=email, password="wrong passphrase!"), timeout=5
            )
        assert rich_error(caught.value).reason == "INVALID_CREDENTIALS"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateSession(
            pb.CreateSessionRequest(email=email, password=PASSWORD), timeout=5
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")


async def test_redis_hung_then_killed_then_back(tmp_path: Path, own_redis: OwnRedis) -> None:
    invalid, throttled = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    async with running_server(settings_for(tmp_path, redis_url=own_redis.url)) as (app, channel):
        identity = pb_grpc.IdentityServiceStub(channel)
        # Up: the limit holds (10 a minute for this peer).
        assert await _calls(identity, 11) == [invalid] * 10 + [throttled]

        # Hung (SIGSTOP: connections stay open, nothing answers): calls pass, late by at
        # most the store's 0.5 s timeout, and are counted as storage failures.
        own_redis.signal(signal.SIGSTOP)
        hung = [await _reset_password(identity) for _ in range(4)]
        assert [code for code, _ in hung] == [invalid] * 4
        assert max(seconds for _, seconds in hung) < 1.5
        assert app.api.rate_limit_gate.storage_failures >= 4

        # Killed: calls pass at once.
        await own_redis.kill()
        failures = app.api.rate_limit_gate.storage_failures
        dead = [await _reset_password(identity) for _ in range(20)]
        assert [code for code, _ in dead] == [invalid] * 20
        assert max(seconds for _, seconds in dead) < 1.0
        assert app.api.rate_limit_gate.storage_failures == failures + 20
        print(
            f"hung Redis: slowest call {max(s for _, s in hung) * 1000:.0f} ms; "
            f"dead Redis: slowest call {max(s for _, s in dead) * 1000:.0f} ms"
        )

        # The lockout lives in the database and does not care.
        await _locked_out(app, channel, "ada@example.com")

        # Back (empty: no persistence): limits are enforced again, without a restart.
        await own_redis.start()
        assert await _calls(identity, 11) == [invalid] * 10 + [throttled]
