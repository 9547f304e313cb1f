"""Every method is served through generic handlers, none as a gRPC "registered method":
grpc.aio waits on one pending call request per registered method for every call it
accepts, which cost a cheap RPC about a sixth of its server CPU (see `registration`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.servers import running_server, settings_for


async def test_no_method_is_registered_and_all_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[str] = []
    server_class: Any = type(aio.server())
    original = server_class.add_registered_method_handlers

    def recording(self: Any, service: str, handlers: Any) -> None:
        registered.append(service)
        original(self, service, handlers)

    monkeypatch.setattr(server_class, "add_registered_method_handlers", recording)
    async with running_server(settings_for(tmp_path)) as (_, channel):
        jwks = await pb_grpc.IdentityServiceStub(channel).GetJwks(pb.GetJwksRequest())
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert jwks.keys
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert registered == []
