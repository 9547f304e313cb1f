"""Talking to providers' OAuth 2.0 endpoints (RFC 6749, RFC 7009), as a port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from keyhold.domain.provider.providers import Provider


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_in: int | None = None
    scope: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret


class OAuthError(Exception):
    """The provider answered with an OAuth error (`invalid_grant`, …)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.description = description


class ProviderUnreachable(Exception):
    """The provider could not be reached, timed out, answered 5xx or garbage, or its
    circuit breaker is open."""


class OAuthClient(Protocol):
    async def exchange_code(
        self, provider: Provider, client_secret: str, code: str, verifier: str, redirect_uri: str
    ) -> TokenSet: ...

    async def refresh(
        self, provider: Provider, client_secret: str, refresh_token: str
    ) -> TokenSet: ...

    async def revoke(
        self, provider: Provider, client_secret: str, token: str, hint: str
    ) -> None: ...
