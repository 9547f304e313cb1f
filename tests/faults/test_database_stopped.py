"""PostgreSQL stopped under load, then started again: calls fail fast with UNAVAILABLE,
health turns NOT_SERVING and back, the process recovers by itself, and the audit trail
tells the truth about every call: each success has its SUCCEEDED record and no call
that failed has one.

The database really goes away here (its own throwaway cluster, `pg_ctl stop`), unlike
`tests/integration/test_database_down.py`, where a proxy cuts the connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.application.audit.trail import verify_trail
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.audit import attempts_of
from tests.support.load import Load
from tests.support.pg_cluster import throwaway_cluster
from tests.support.servers import PASSWORD, running_server, settings_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEADLINE = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _wait_for_health(channel: grpc.aio.Channel, wanted: int, within: float) -> float:
    health = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < within:
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        if response.status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"health did not become {wanted} within {within}s")


def _email(index: int) -> str:
    return f"user{index}@example.com"


async def _listening(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        return bool(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
            )
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_stopped_mid_load_then_back(tmp_path: Path, mode: str) -> None:
    async with throwaway_cluster() as cluster:
        admin = await asyncpg.connect(cluster.admin_dsn)
        await admin.execute("CREATE DATABASE keyhold")
        await admin.close()
        url = cluster.url("keyhold")
        settings = settings_for(
            tmp_path,
            url,
            rate_limits_enabled=False,
            database_connect_timeout_seconds=2,
            database_statement_timeout_seconds=DEADLINE,
        )
        async with running_server(settings) as (app, channel):
            identity = pb_grpc.IdentityServiceStub(channel)

            async def register(index: int) -> pb.CreateUserResponse:
                return await identity.CreateUser(
                    pb.CreateUserRequest(email=_email(index), password=PASSWORD, display_name="U"),
                    timeout=DEADLINE,
                )

            load = Load(register, workers=8)
            load.start()
            try:
                await load.wait_for_ok(20, within=30)
                await cluster.stop(mode)
                stopped = time.monotonic()
                took = await _wait_for_health(channel, NOT_SERVING, within=5)
                await asyncio.sleep(1.5)  # the load keeps coming during the outage
                restarting = time.monotonic()
                await cluster.start()
                restarted = time.monotonic()
                recovered = await _wait_for_health(channel, SERVING, within=15)
                await load.wait_for_ok(20, within=30, since=restarted + recovered)
            finally:
                calls = await load.stop()

            codes = load.codes()
            print(
                f"{mode}: {len(calls)} calls, {codes}; NOT_SERVING {took:.2f}s after the stop,"
                f" SERVING {recovered:.2f}s after the start"
            )
            # Every call ended with a success or a fast, clear UNAVAILABLE.
            assert set(codes) <= {
                ("OK", None),
                ("UNAVAILABLE", "DATABASE_UNAVAILABLE"),
                ("UNAVAILABLE", "AUDIT_UNAVAILABLE"),
            }, codes
            assert sum(n for (code, _), n in codes.items() if code == "UNAVAILABLE") > 0
            assert max(c.seconds for c in calls) < DEADLINE
            during = [
                c
                for c in calls
                if stopped + 0.5 <= c.started and c.started + c.seconds < restarting
            ]
            assert during, "no call was made while the database was down"
            assert all(c.code is grpc.StatusCode.UNAVAILABLE for c in during)
            assert max(c.seconds for c in during) < 3.0  # failing fast, not waiting it out
            print(
                f"{mode}: {len(during)} calls made while it was down, the slowest answered in "
                f"{max(c.seconds for c in during) * 1000:.0f} ms; slowest call overall "
                f"{max(c.seconds for c in calls) * 1000:.0f} ms (deadline {DEADLINE:g} s)"
            )

            # The audit trail tells the truth about every call, read from the database.
            attempts = await attempts_of(url, "identity.user.create")
            assert attempts.malformed() == []
            assert (await verify_trail(app.audit.trail, 0, 0)).ok
            connection = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                rows = await connection.fetch("SELECT id, email FROM users")
            finally:
                await connection.close()
            stored = {row["email"]: f"users/{row['id']}" for row in rows}
            # Sign-up answers without the user (the same for a new and a taken email):
            # an OK call's user is the one stored under its email ("" if none is).
            ok = {_email(c.index): stored.get(_email(c.index), "") for c in load.ok()}
            # Done, but its SUCCEEDED record not confirmed (lost with the database, or
            # committed with its acknowledgement lost): the caller was told it was done.
            performed = {_email(c.index) for c in calls if c.info.get("performed") == "true"}
            not_done = {
                _email(c.index)
                for c in calls
                if c.code is grpc.StatusCode.UNAVAILABLE and c.info.get("performed") != "true"
            }
            succeeded = set(attempts.resources_with("succeeded"))
            # Every OK has its SUCCEEDED record and its user.
            assert set(ok.values()) <= succeeded
            assert all(stored.get(email) == name for email, name in ok.items())
            # No SUCCEEDED record, and no user, for a call answered "not performed".
            assert not {stored[e] for e in not_done if e in stored} & succeeded
            assert not not_done & stored.keys()
            # What was stored is what callers were told was done; each has its ATTEMPTED.
            assert stored.keys() == ok.keys() | performed
            assert set(stored.values()) <= set(attempts.resources.values())
            assert all(attempts.outcomes[a] == ["attempted"] for a in attempts.unfinished())
            print(
                f"{mode}: {len(ok)} OK, {len(not_done)} not performed, {len(performed)} done "
                "with their outcome unconfirmed"
            )

            # The LISTEN connection comes back by itself, within its backoff.
            deadline = time.monotonic() + 15
            while not await _listening(url.replace("+asyncpg", "")):
                assert time.monotonic() < deadline, "the listener did not reconnect"
                await asyncio.sleep(0.2)
