"""A service account's access token: obtained, cached and renewed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc


class ServiceAccountCredentials:
    """Tokens for one service account. `token()` returns a cached token until it is
    within `renew_before_seconds` of expiring (or past half its lifetime, if shorter);
    then exactly one CreateServiceToken request renews it, however many callers wait."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        *,
        renew_before_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = list(scopes)
        self._renew_before = renew_before_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._token = ""
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._stub: Any = None
        self.requests = 0  # CreateServiceToken calls made, for observability

    def bind(self, channel: grpc.aio.Channel) -> None:
        """The channel to Keyhold on which tokens are requested (without credentials)."""
        self._stub = pb_grpc.IdentityServiceStub(channel)

    async def token(self) -> str:
        if self._token and self._monotonic() < self._renew_at:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token and self._monotonic() < self._renew_at:
                return self._token
            await self._renew()
        return self._token

    async def _renew(self) -> None:
        if self._stub is None:
            raise RuntimeError("bind() the credentials to a channel to Keyhold first")
        self.requests += 1
        response = await self._stub.CreateServiceToken(
            pb.CreateServiceTokenRequest(
                client_id=self._client_id,
                client_secret=self._client_secret,
                scopes=self._scopes,
            ),
            timeout=self._timeout,
        )
        lifetime = max(response.access_token_expire_time.seconds - time.time(), 0.0)
        self._token = response.access_token
        self._renew_at = self._monotonic() + lifetime - min(self._renew_before, lifetime / 2)

    def invalidate(self) -> None:
        """Forget the cached token (after the server refused it)."""
        self._token = ""
        self._renew_at = 0.0
