"""Verifying Keyhold access tokens locally, against the keys Keyhold publishes."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from keyhold.access_token_verification import AccessTokenVerifier
from keyhold.domain.clock import SystemClock
from keyhold.domain.principal import Principal
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc

# Published keys held at most: Keyhold publishes the few that verify live tokens, and
# an answer listing more is cut to its last (newest) ones.
MAX_PUBLISHED_KEYS = 100


@dataclass(frozen=True, slots=True)
class _PublishedKey:
    algorithm: str
    public_key: Any


class JwksKeys:
    """Keyhold's published keys, fetched with GetJwks and cached. An unknown key id
    triggers a refetch at most once per `min_refetch_seconds`, so a flood of tokens
    with made-up key ids cannot turn into a flood of requests to Keyhold."""

    def __init__(self, channel: grpc.aio.Channel, min_refetch_seconds: float = 30.0) -> None:
        self._stub: Any = pb_grpc.IdentityServiceStub(channel)
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, _PublishedKey] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    def get(self, key_id: str) -> _PublishedKey | None:
        return self._keys.get(key_id)

    async def reload_if_stale(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refetch:
                return False
            await self._fetch()
            return True

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        response = await self._stub.GetJwks(pb.GetJwksRequest(), timeout=10.0)
        keys = {}
        for jwk in json.loads(response.jwks_json)["keys"][-MAX_PUBLISHED_KEYS:]:
            if jwk.get("alg") in ("ES256", "EdDSA") and jwk.get("use", "sig") == "sig":
                keys[jwk["kid"]] = _PublishedKey(jwk["alg"], jwt.PyJWK(jwk).key)
        self._keys = keys


class TokenVerifier:
    """Verifies Keyhold access tokens with Keyhold's own rules (pinned algorithm, exact
    issuer and audience, every claim required, 8 KiB cap, small leeway). `audience` is
    the service's own (its API resource's): a token minted for any other service, or
    for Keyhold itself, is refused (`TOKEN_AUDIENCE_MISMATCH`). Local
    verification cannot see revocations: a revoked session's token stays valid here until
    it expires (15 minutes by default); ask IntrospectToken where that matters."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        audience: str,
        issuer: str = "keyhold",
        leeway_seconds: int = 30,
        min_refetch_seconds: float = 30.0,
    ) -> None:
        self.keys = JwksKeys(channel, min_refetch_seconds)
        self._verifier = AccessTokenVerifier(
            self.keys,
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
            clock=SystemClock(),
        )

    async def verify(self, token: str) -> Principal:
        """The token's principal; raises `keyhold.domain.errors.Unauthenticated`."""
        return await self._verifier.verify(token)
