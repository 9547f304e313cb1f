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


MAX_TOKEN_LIFETIME_SECONDS = 366 * 24 * 3600
"""A longer stated lifetime is taken as this: the token is refreshed at least yearly."""
MAX_ERROR_LENGTH = 64
MAX_ERROR_DESCRIPTION_LENGTH = 256


def printable(text: str, limit: int) -> str:
    """`text` as something safe to log or show: control and other non-printing
    characters replaced by `?`, cut to `limit` characters (the cut marked with `…`)."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class OAuthError(Exception):
    """The provider answered with an OAuth error (`invalid_grant`, …). Both texts come
    from the provider: they are kept printable and short, whatever it sent."""

    def __init__(self, error: str, description: str = "") -> None:
        error = printable(error, MAX_ERROR_LENGTH) or "invalid_response"
        super().__init__(error)
        self.error = error
        self.description = printable(description, MAX_ERROR_DESCRIPTION_LENGTH)


class ProviderResponseInvalid(Exception):
    """The provider answered a token request with a success that breaks RFC 6749 §5.1
    beyond repair (no access token, an `expires_in` that is not a number, …); `field`
    names the member at fault."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
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
