"""A stand-in for Keyhold's IdentityService on a loopback port, for client behaviour the
real server cannot be made to show on demand: it records what it receives, can hold
requests until released, and refuses the service tokens it is told to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc


class FakeIdentity(pb_grpc.IdentityServiceServicer):
    def __init__(self, lifetime_seconds: int = 120) -> None:
        self.lifetime = lifetime_seconds
        self.token_requests: list[pb.CreateServiceTokenRequest] = []
        self.exchanges: list[tuple[pb.ExchangeTokenRequest, str]] = []  # and the bearer
        self.refused: set[str] = set()  # service tokens ExchangeToken refuses
        self.gate = asyncio.Event()  # ExchangeToken answers only while it is set
        self.gate.set()
        self._arrivals = asyncio.Condition()

    def _expiry(self) -> Timestamp:
        return Timestamp(seconds=int(time.time()) + self.lifetime)

    async def CreateServiceToken(
        self, request: pb.CreateServiceTokenRequest, context: Any
    ) -> pb.CreateServiceTokenResponse:
        self.token_requests.append(request)
        return pb.CreateServiceTokenResponse(
            access_token=f"service-{len(self.token_requests)}",
            access_token_expire_time=self._expiry(),
            audience=request.audience,
        )

    async def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: Any
    ) -> pb.ExchangeTokenResponse:
        bearer = dict(context.invocation_metadata())["authorization"].removeprefix("Bearer ")
        async with self._arrivals:
            self.exchanges.append((request, bearer))
            self._arrivals.notify_all()
        await self.gate.wait()
        if bearer in self.refused:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token refused")
        return pb.ExchangeTokenResponse(
            access_token=f"{request.subject_token}@{request.audience}#{len(self.exchanges)}",
            access_token_expire_time=self._expiry(),
            audience=request.audience,
        )

    async def exchanges_received(self, count: int) -> None:
        """Returns once `count` ExchangeToken requests have arrived."""
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: len(self.exchanges) >= count)


@asynccontextmanager
async def fake_keyhold(
    servicer: FakeIdentity,
) -> AsyncIterator[grpc.aio.Channel]:
    """`servicer` served on a loopback port; a plaintext channel to it."""
    server = grpc.aio.server()
    pb_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)
