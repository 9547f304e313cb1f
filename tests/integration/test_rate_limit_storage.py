"""Rate-limit storage chosen by configuration: Redis counters when KEYHOLD_REDIS_URL is
set (shared by replicas), failing open when Redis cannot be reached."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.servers import running_server, settings_for

REDIS_URL = os.environ.get("KEYHOLD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        await client.aclose()
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI and is unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    return client


async def _reset_password_codes(channel: grpc.aio.Channel, calls: int) -> list[grpc.StatusCode]:
    identity = pb_grpc.IdentityServiceStub(channel)
    codes = []
    for _ in range(calls):
        try:
            await identity.ResetPassword(pb.ResetPasswordRequest(reset_token="t"))
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    return codes


@pytest.mark.redis
async def test_limits_are_kept_in_redis_and_shared(tmp_path: Path) -> None:
    client = await _redis_or_skip()
    database = f"redis://127.0.0.1:6379/{secrets.randbelow(8) + 8}"
    await redis.Redis.from_url(database).flushdb()
    try:
        async with running_server(settings_for(tmp_path / "a", redis_url=database)) as (_, first):
            codes = await _reset_password_codes(first, 6)
        async with running_server(settings_for(tmp_path / "b", redis_url=database)) as (_, second):
            codes += await _reset_password_codes(second, 6)
        # 10/minute per peer: the counter survived into the second server through Redis.
        assert codes.count(grpc.StatusCode.INVALID_ARGUMENT) == 10
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2
        assert await redis.Redis.from_url(database).keys("keyhold*")
    finally:
        await redis.Redis.from_url(database).flushdb()
        await client.aclose()


async def test_unreachable_redis_fails_open(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, redis_url="redis://127.0.0.1:1/0")
    async with running_server(settings) as (app, channel):
        codes = await _reset_password_codes(channel, 12)
        assert app.api.rate_limit_gate.storage_failures == 12
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 12
