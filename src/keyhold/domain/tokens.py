"""Access tokens as the application sees them: issued by a port, verified by the api."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        """The token's principal; raises Unauthenticated for any token not to be trusted
        here (one for another audience included)."""
        ...

    async def verify_any_audience(self, token: str) -> Principal:
        """The token's principal whatever its audience, by every other rule."""
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
        audience: str | None = None,
        actor_chain: Sequence[str] = (),
        not_after: int | None = None,
    ) -> IssuedToken:
        """A signed access token; for `audience`, or the issuer's own when None; naming
        `actor_chain` (most recent first) as its `act` claim; expiring no later than
        `not_after`."""
        ...
