"""Tokens to call another service on a user's behalf (RFC 8693 token exchange)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from keyhold.client.credentials import ServiceAccountCredentials
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc

_Key = tuple[bytes, str]  # (SHA-256 of the user's token, audience)


@dataclass(frozen=True, slots=True)
class _Exchanged:
    token: str
    renew_at: float  # on the `monotonic` clock


class OnBehalfOf:
    """`token_for(user_token)` is a token for `audience` carrying the user as subject and
    this service (the account of `credentials`) as actor, with `scopes` (empty means
    all Keyhold allows). Bind it to a channel to Keyhold with `bind(channel)`, as
    credentials are; `credentials` must be bound too (`keyhold_channel` binds them).

    Exchanged tokens are cached, keyed by a SHA-256 digest of the user's token (the
    token itself is not kept), until `renew_before_seconds` before they expire; a token
    closer to its expiry than that is not cached. The cache holds at most `max_entries`
    tokens, dropping the least recently used. Concurrent calls for the same user token
    share one ExchangeToken request; at most `max_entries` requests are shared at a
    time, and calls beyond that make their own. Failures are not cached: Keyhold's
    refusals propagate as `grpc.aio.AioRpcError`. If Keyhold refuses the service's own
    token (UNAUTHENTICATED), it is renewed and the exchange retried once."""

    def __init__(
        self,
        credentials: ServiceAccountCredentials,
        audience: str,
        scopes: Sequence[str] = (),
        *,
        max_entries: int = 1024,
        renew_before_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._credentials = credentials
        self._audience = audience
        self._scopes = list(scopes)
        self._max_entries = max_entries
        self._renew_before = renew_before_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._cache: OrderedDict[_Key, _Exchanged] = OrderedDict()
        self._in_flight: dict[_Key, asyncio.Task[str]] = {}
        self._stub: Any = None
        self.requests = 0  # ExchangeToken calls made, for observability

    def bind(self, channel: grpc.aio.Channel) -> None:
        """The channel to Keyhold on which tokens are exchanged (without credentials:
        the service's token is added to each request)."""
        self._stub = pb_grpc.IdentityServiceStub(channel)

    def __len__(self) -> int:
        """How many exchanged tokens are cached."""
        return len(self._cache)

    async def token_for(self, user_token: str) -> str:
        key = (hashlib.sha256(user_token.encode()).digest(), self._audience)
        cached = self._cache.get(key)
        if cached is not None:
            if self._monotonic() < cached.renew_at:
                self._cache.move_to_end(key)
                return cached.token
            del self._cache[key]
        shared = self._in_flight.get(key)
        if shared is None:
            if len(self._in_flight) >= self._max_entries:
                return await self._exchange(key, user_token)
            shared = asyncio.create_task(self._shared_exchange(key, user_token))
            self._in_flight[key] = shared
        # One caller cancelled does not cancel the request the others wait on.
        return await asyncio.shield(shared)

    async def _shared_exchange(self, key: _Key, user_token: str) -> str:
        try:
            return await self._exchange(key, user_token)
        finally:
            del self._in_flight[key]

    async def _exchange(self, key: _Key, user_token: str) -> str:
        if self._stub is None:
            raise RuntimeError("bind() OnBehalfOf to a channel to Keyhold first")
        request = pb.ExchangeTokenRequest(
            subject_token=user_token, audience=self._audience, scopes=self._scopes
        )
        own = await self._credentials.token()
        try:
            response = await self._call(request, own)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAUTHENTICATED:
                raise
            self._credentials.invalidate(own)
            response = await self._call(request, await self._credentials.token())
        token: str = response.access_token
        lifetime = response.access_token_expire_time.seconds - time.time()
        if lifetime > self._renew_before:
            renew_at = self._monotonic() + lifetime - self._renew_before
            self._cache[key] = _Exchanged(token, renew_at)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return token

    async def _call(self, request: pb.ExchangeTokenRequest, own_token: str) -> Any:
        self.requests += 1
        return await self._stub.ExchangeToken(
            request, metadata=(("authorization", f"Bearer {own_token}"),), timeout=self._timeout
        )
