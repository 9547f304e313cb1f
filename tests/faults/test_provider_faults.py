"""An upstream provider that answers garbage, then stalls, under a server on PostgreSQL:
its circuit opens (later calls are refused at once, without reaching it), the service's
other RPCs keep their latency while a dozen provider calls hang, nothing is mistaken for
a database outage, and the circuit closes again once the provider answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.provider.v1 import provider_service_pb2 as pb
from tests.e2e.test_providers import World
from tests.support.databases import postgres_database
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import running_server, settings_for
from tests.support.status import rich_error

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONNECTIONS = 12  # more than the database pool's 10 connections
TIMEOUT, COOLDOWN = 2.0, 1.0


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as running:
        yield running


async def _refresh(world: World, name: str) -> tuple[str, str | None, float]:
    started = time.monotonic()
    try:
        await world.stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=name), metadata=world.user, timeout=15
        )
    except grpc.aio.AioRpcError as error:
        return error.code().name, rich_error(error).reason, time.monotonic() - started
    return "OK", None, time.monotonic() - started


async def _timed(call: object) -> float:
    started = time.monotonic()
    await call  # type: ignore[misc]
    return time.monotonic() - started


async def test_garbage_then_stalls_open_the_circuit_and_the_rest_carries_on(
    tmp_path: Path, provider: FakeOAuthProvider
) -> None:
    settings_kwargs = {
        "rate_limits_enabled": False,
        "provider_retries": 0,
        "provider_timeout_seconds": TIMEOUT,
        "provider_breaker_threshold": 3,
        "provider_breaker_cooldown_seconds": COOLDOWN,
    }
    async with (
        postgres_database() as url,
        running_server(settings_for(tmp_path, url, **settings_kwargs)) as (app, channel),
    ):
        world = await World(app, channel).setup()
        await world.create_oauth_provider(provider)
        names = [(await world.connect(provider)).name for _ in range(CONNECTIONS)]
        before = (await world.credential(names[0])).access_token

        # Garbage: 200 with a body that is not JSON, three times, opens the circuit.
        provider.garbage("token", count=3)
        for _ in range(3):
            assert (await _refresh(world, names[0]))[:2] == ("UNAVAILABLE", "PROVIDER_UNAVAILABLE")
        asked = provider.requests["token"]
        code, reason, seconds = await _refresh(world, names[0])
        assert (code, reason) == ("UNAVAILABLE", "PROVIDER_UNAVAILABLE")
        assert seconds < 0.3  # refused at once, without asking the provider
        assert provider.requests["token"] == asked
        # Nothing of the garbage was kept: the connection and its credential are as before.
        connection = await world.stub.GetConnection(
            pb.GetConnectionRequest(name=names[0]), metadata=world.user
        )
        assert connection.connection.state == pb.CONNECTION_STATE_ACTIVE
        assert (await world.credential(names[0])).access_token == before
        await asyncio.sleep(COOLDOWN)
        assert (await _refresh(world, names[0]))[0] == "OK"  # the trial call closes it

        # Stalls: every connection refreshed at once while the provider hangs.
        identity = identity_grpc.IdentityServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=world.user)
        provider.stall("token", seconds=10)
        stalled = [asyncio.ensure_future(_refresh(world, name)) for name in names]
        await asyncio.sleep(0.3)
        latencies = []
        for _ in range(20):
            latencies.append(
                await _timed(identity.GetJwks(identity_pb.GetJwksRequest(), timeout=5))
            )
            latencies.append(
                await _timed(
                    identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=world.user, timeout=5)
                )
            )
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        results = await asyncio.gather(*stalled)
        print(
            f"while {CONNECTIONS} provider calls stalled: GetJwks/WhoAmI slowest "
            f"{max(latencies) * 1000:.0f} ms over {len(latencies)} calls; refreshes "
            f"{sorted({r[:2] for r in results})} in {min(r[2] for r in results):.2f}-"
            f"{max(r[2] for r in results):.2f} s"
        )
        assert max(latencies) < 0.5
        assert {r[:2] for r in results} == {("UNAVAILABLE", "PROVIDER_UNAVAILABLE")}
        # Each waited out the provider timeout at most, bar one: the circuit's half-open
        # trial, let through once the cooldown had passed, which waits it out once more.
        slow = sorted(seconds for _, _, seconds in results if seconds > TIMEOUT + 1.0)
        assert len(slow) <= 1
        assert max(r[2] for r in results) < 2 * TIMEOUT + 1.5
        asked = provider.requests["token"]
        code, _, seconds = await _refresh(world, names[1])
        assert code == "UNAVAILABLE"
        assert seconds < 0.3  # open again
        assert provider.requests["token"] == asked

        # The provider answers again: after the cooldown, refreshes work.
        provider.reset_faults()
        await asyncio.sleep(COOLDOWN)
        assert (await _refresh(world, names[1]))[0] == "OK"
        assert {(await _refresh(world, name))[0] for name in names} == {"OK"}
