"""PostgreSQL going away: calls fail fast with UNAVAILABLE, health turns NOT_SERVING,
and the service recovers by itself when the database is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.proxy import CuttableProxy
from tests.support.servers import bearer, running_server, service_token, settings_for
from tests.support.status import rich_error

pytestmark = pytest.mark.postgres


async def _wait_for_status(channel: grpc.aio.Channel, wanted: int, within: float) -> float:
    health = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < within:
        response = await health.Check(health_pb2.HealthCheckRequest())
        if response.status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"health did not become {wanted} within {within}s")


async def test_database_down_then_back(tmp_path: Path, postgres_url: str) -> None:
    host_port = postgres_url.rpartition("@")[2].partition("/")[0]
    host, _, port = host_port.partition(":")
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    settings = settings_for(
        tmp_path, proxied, database_connect_timeout_seconds=2, database_statement_timeout_seconds=2
    )
    try:
        async with running_server(settings) as (app, channel):
            auditor = bearer(await service_token(app, ("audit.read",)))
            identity = pb_grpc.IdentityServiceStub(channel)
            assert (await identity.GetJwks(pb.GetJwksRequest())).keys
            # Warm the token's account check, so the outage is met by the audit write.
            await audit_grpc.AuditServiceStub(channel).ListAuditEvents(
                audit_pb.ListAuditEventsRequest(page_size=1), metadata=auditor
            )

            proxy.cut()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await identity.GetJwks(pb.GetJwksRequest(), timeout=10)
            assert time.monotonic() - started < 5
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
            )
            # An audited action is refused rather than performed unaudited.
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await audit_grpc.AuditServiceStub(channel).ListAuditEvents(
                    audit_pb.ListAuditEventsRequest(), metadata=auditor, timeout=10
                )
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "AUDIT_UNAVAILABLE",
            )
            await _wait_for_status(channel, health_pb2.HealthCheckResponse.NOT_SERVING, 5)
            # The process stays up and answers calls that need no database.
            assert (
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            ).status == health_pb2.HealthCheckResponse.NOT_SERVING

            proxy.restore()
            await _wait_for_status(channel, health_pb2.HealthCheckResponse.SERVING, 10)
            assert (await identity.GetJwks(pb.GetJwksRequest())).keys
            listed = await audit_grpc.AuditServiceStub(channel).ListAuditEvents(
                audit_pb.ListAuditEventsRequest(), metadata=auditor
            )
            assert listed.events[0].action == "audit.events.list"
    finally:
        await proxy.stop()
