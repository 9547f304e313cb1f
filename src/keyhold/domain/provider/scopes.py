"""OAuth 2.0 scopes (RFC 6749 §3.3): a bounded list of scope tokens."""

from __future__ import annotations

import re

from keyhold.domain.provider.providers import invalid

MAX_SCOPES = 50
MAX_SCOPE_LENGTH = 128
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 §3.3 scope-token


class ScopesInvalid(ValueError):
    """The scopes break the bounds; `reason` and `description` say how."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def checked_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes without duplicates, in order; ScopesInvalid when there are more than
    MAX_SCOPES or one is not a scope token of at most MAX_SCOPE_LENGTH characters."""
    if len(scopes) > MAX_SCOPES:
        raise ScopesInvalid("SCOPES_TOO_MANY", f"at most {MAX_SCOPES} scopes")
    for scope in scopes:
        if len(scope) > MAX_SCOPE_LENGTH or not _SCOPE_TOKEN.fullmatch(scope):
            raise ScopesInvalid(
                "SCOPE_INVALID",
                f"each scope is 1 to {MAX_SCOPE_LENGTH} printable ASCII characters "
                'other than space, " and \\',
            )
    return tuple(dict.fromkeys(scopes))


def validate_scope_list(scopes: list[str] | tuple[str, ...], field: str) -> tuple[str, ...]:
    """`checked_scopes` for a request field: INVALID_ARGUMENT naming `field`."""
    try:
        return checked_scopes(scopes)
    except ScopesInvalid as exc:
        raise invalid(exc.reason, field, exc.description) from exc
