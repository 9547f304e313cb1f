"""PostgreSQL connections cut under a refresh load, on two replicas: a refresh whose
rotation committed but whose answer was lost fails with UNAVAILABLE, and the client's
only move, presenting the token it holds again, must not be taken for theft.

The proxy holds PostgreSQL's answers back a little, so that each cut finds some
committed rotations whose answers are still on their way."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.proxy import CuttableProxy
from tests.support.servers import PASSWORD, running_server, settings_for
from tests.support.status import rich_error

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 8
CUTS = 6
CUT_EVERY = 1.5  # seconds: a retry is over long before the next cut
ANSWER_DELAY = 0.005


class Client:
    """Refreshes over and over with the token it holds; after UNAVAILABLE it presents
    the same token again (on either replica), as a client that never saw an answer must."""

    def __init__(self, token: str, stubs: list[pb_grpc.IdentityServiceStub]) -> None:
        self.token = token
        self._stubs = itertools.cycle(stubs)
        self.outcomes: Counter[tuple[str, str | None]] = Counter()
        self.retries = 0

    async def run(self, stop: asyncio.Event) -> None:
        retrying = False
        while not stop.is_set():
            try:
                answer = await next(self._stubs).RefreshSession(
                    pb.RefreshSessionRequest(refresh_token=self.token), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                rich = rich_error(error)
                self.outcomes[(rich.code.name, rich.reason)] += 1
                if rich.code is not grpc.StatusCode.UNAVAILABLE:
                    return  # the session is gone: nothing more this client can do
                retrying = True
                await asyncio.sleep(0.05)
                continue
            self.outcomes[("OK", None)] += 1
            self.retries += retrying
            retrying = False
            self.token = answer.refresh_token


async def _logged_in(app: KeyholdServer, channel: grpc.aio.Channel, index: int) -> str:
    email = f"user{index}@example.com"
    await app.identity.users.create(email, PASSWORD, "U")
    session = await pb_grpc.IdentityServiceStub(channel).CreateSession(
        pb.CreateSessionRequest(email=email, password=PASSWORD, user_agent="fault test")
    )
    return session.refresh_token


async def test_retries_after_cut_connections_keep_their_sessions(
    tmp_path: Path, postgres_url: str
) -> None:
    host_port = postgres_url.rpartition("@")[2].partition("/")[0]
    host, _, port = host_port.partition(":")
    proxy = CuttableProxy(host, int(port), answer_delay=ANSWER_DELAY)
    await proxy.start()
    proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")

    def replica(
        name: str,
    ) -> contextlib.AbstractAsyncContextManager[tuple[KeyholdServer, grpc.aio.Channel]]:
        settings = settings_for(
            tmp_path / name,
            proxied,
            key_dir=tmp_path / "keys",  # the replicas share their key-encryption key
            rate_limits_enabled=False,
            database_connect_timeout_seconds=2,
            database_statement_timeout_seconds=5,
        )
        return running_server(settings)

    try:
        async with replica("a") as (app, channel_a), replica("b") as (_, channel_b):
            stubs = [pb_grpc.IdentityServiceStub(c) for c in (channel_a, channel_b)]
            tokens = [await _logged_in(app, channel_a, index) for index in range(CLIENTS)]
            clients = [Client(token, stubs) for token in tokens]
            stop = asyncio.Event()
            running = [asyncio.create_task(client.run(stop)) for client in clients]
            try:
                for _ in range(CUTS):
                    await asyncio.sleep(CUT_EVERY)
                    proxy.cut()  # every connection dropped, answers on their way lost
                    proxy.restore()
                await asyncio.sleep(CUT_EVERY)
            finally:
                stop.set()
                await asyncio.gather(*running)
    finally:
        await proxy.stop()

    outcomes = sum((client.outcomes for client in clients), Counter[tuple[str, str | None]]())
    print(f"{outcomes}; refreshes that needed a retry: {sum(c.retries for c in clients)}")
    assert set(outcomes) <= {
        ("OK", None),
        ("UNAVAILABLE", "DATABASE_UNAVAILABLE"),
        ("UNAVAILABLE", "AUDIT_UNAVAILABLE"),
    }, outcomes
    assert sum(n for (code, _), n in outcomes.items() if code == "UNAVAILABLE"), "no cut hit"
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        revoked = await connection.fetchval(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"
        )
        retried = await connection.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'identity.session.refresh'"
            " AND outcome = 'succeeded' AND details LIKE '%retried_within_grace%'"
        )
    finally:
        await connection.close()
    assert revoked == 0
    # The cuts did lose answers of committed rotations, and their retries were served.
    assert retried > 0
