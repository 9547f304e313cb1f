"""Authentication: the bearer token in `authorization` metadata becomes the principal."""

from __future__ import annotations

from typing import Protocol

from keyhold.api.policy import MethodPolicy
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import ANONYMOUS, Principal

_DOMAIN = "keyhold.identity"


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


def _bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "CREDENTIALS_MALFORMED", "authorization must be `Bearer <token>`", domain=_DOMAIN
        )
    return token


class Authenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def authenticate(self, policy: MethodPolicy, authorization: str | None) -> Principal:
        if policy.public:
            return await self._optional(authorization)
        if authorization is None:
            raise Unauthenticated(
                "CREDENTIALS_MISSING", "this method needs a bearer token", domain=_DOMAIN
            )
        return await self._verifier.verify(_bearer_token(authorization))

    async def _optional(self, authorization: str | None) -> Principal:
        """On public methods a valid token names the caller; anything else is anonymous."""
        if authorization is None:
            return ANONYMOUS
        try:
            return await self._verifier.verify(_bearer_token(authorization))
        except Unauthenticated:
            return ANONYMOUS
