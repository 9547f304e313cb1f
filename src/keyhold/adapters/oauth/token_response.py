"""Reading a provider's token endpoint answer (RFC 6749 §5.1, §5.2) defensively: every
member is checked for type and bounds, and nothing the provider sends reaches a caller
or a log unbounded."""

from __future__ import annotations

import math
from typing import Any

from keyhold.domain.provider.oauth import (
    MAX_TOKEN_LIFETIME_SECONDS,
    OAuthError,
    ProviderResponseInvalid,
    TokenSet,
)
from keyhold.domain.provider.scopes import ScopesInvalid, checked_scopes

MAX_TOKEN_LENGTH = 16 * 1024
_MAX_LIFETIME_DIGITS = 20


def _bounded_text(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else "" if value is None else type(value).__name__
    return text[:limit]


def oauth_error(body: dict[str, Any]) -> OAuthError:
    """The error answer as an OAuthError: a non-string `error` is named by its type and
    both texts are cut short before anything else sees them."""
    error = body.get("error")
    return OAuthError(
        _bounded_text(error, 256) or "invalid_response",
        _bounded_text(body.get("error_description"), 4096),
    )


def _lifetime(value: object) -> int | None:
    """`expires_in` in seconds, within [0, MAX_TOKEN_LIFETIME_SECONDS]: negative values
    count as already expired, larger ones (infinity included) as the maximum. A decimal
    string is read as its number (some providers send one)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > _MAX_LIFETIME_DIGITS:
            return MAX_TOKEN_LIFETIME_SECONDS
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderResponseInvalid("expires_in", "not a number of seconds")
    if isinstance(value, float) and math.isnan(value):
        raise ProviderResponseInvalid("expires_in", "not a number of seconds")
    if value >= MAX_TOKEN_LIFETIME_SECONDS:
        return MAX_TOKEN_LIFETIME_SECONDS
    return int(value) if value > 0 else 0


def _token(body: dict[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name)
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_LENGTH:
        raise ProviderResponseInvalid(name, f"not a string of 1 to {MAX_TOKEN_LENGTH} characters")
    return value


def _scope(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProviderResponseInvalid("scope", "not a string")
    try:
        return " ".join(checked_scopes(value.split()))
    except ScopesInvalid as exc:
        raise ProviderResponseInvalid("scope", exc.description) from exc


def token_set(body: dict[str, Any]) -> TokenSet:
    """The tokens of a successful answer; ProviderResponseInvalid naming the member that
    makes it unusable."""
    token_type = body.get("token_type", "Bearer")
    return TokenSet(
        access_token=_token(body, "access_token", required=True),
        refresh_token=_token(body, "refresh_token", required=False),
        expires_in=_lifetime(body.get("expires_in")),
        scope=_scope(body.get("scope")),
        token_type=token_type[:64] if isinstance(token_type, str) else "Bearer",
    )
