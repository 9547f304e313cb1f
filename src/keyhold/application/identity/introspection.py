"""Token introspection (RFC 7662 in spirit): is this token active, and whose is it."""

from __future__ import annotations

from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal
from keyhold.domain.tokens import AccessTokenVerifier


class TokenIntrospection:
    def __init__(self, verifier: AccessTokenVerifier) -> None:
        self._verifier = verifier

    async def introspect(self, token: str) -> Principal | None:
        """The principal of an active token; None for expired, revoked, malformed or
        foreign tokens (inactive is an answer, not an error)."""
        try:
            return await self._verifier.verify(token)
        except Unauthenticated:
            return None
