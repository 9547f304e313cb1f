"""Who is calling: the authenticated principal established from an access token."""

from __future__ import annotations

import enum
from dataclasses import dataclass

ADMIN_ROLE = "admin"


class PrincipalType(enum.StrEnum):  # str hashing: checked on every call
    USER = "user"
    SERVICE = "service"
    ANONYMOUS = "anonymous"
    SYSTEM = "system"  # the command line and the service's own maintenance


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `subject` is a resource name: `users/{id}` or
    `service-accounts/{id}`; empty for anonymous callers."""

    type: PrincipalType
    subject: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    session_id: str | None = None
    token_id: str | None = None
    expires_at: int | None = None
    issued_at: int | None = None
    audience: str = ""  # the `aud` of the token it was read from
    # For a token obtained by token exchange: the services it passed through, the most
    # recent first (its `act` claim, RFC 8693 §4.1, flattened).
    actor_chain: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def is_anonymous(self) -> bool:
        return self.type is PrincipalType.ANONYMOUS


ANONYMOUS = Principal(type=PrincipalType.ANONYMOUS, subject="")
SYSTEM = Principal(type=PrincipalType.SYSTEM, subject="system/cli")
