"""Access tokens as the application sees them: issued by a port, verified by the api."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from keyhold.domain.principal import Principal


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: str
    issued_at: int
    expires_at: int


class AccessTokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal:
        """The token's principal; raises Unauthenticated for any token not to be trusted."""
        ...


class ReplicaNotices(Protocol):
    """Tells every replica at once what changed: sessions or service accounts ended,
    a signing key rotated."""

    async def publish(self, kind: str, ids: list[str]) -> None: ...


class AccessTokenIssuer(Protocol):
    def issue(
        self,
        *,
        subject: str,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        session_id: str | None = None,
        lifetime_seconds: int | None = None,
    ) -> IssuedToken: ...
