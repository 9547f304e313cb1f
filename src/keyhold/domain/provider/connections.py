"""Users' connections to providers, their pending authorizations and credentials."""

from __future__ import annotations

import enum
import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from keyhold.domain.provider.providers import invalid

CONNECTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class ConnectionState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    user_id: str
    provider: str  # slug
    state: ConnectionState
    scopes: tuple[str, ...]
    expires_at: datetime | None  # of the upstream access token
    created_at: datetime
    updated_at: datetime
    last_refresh_at: datetime | None = None
    credential_origin: str = ""
    """The token endpoint origin the connection's authorization and tokens belong to; its
    tokens go to no other ("" for API-key connections)."""

    @property
    def name(self) -> str:
        return f"connections/{self.id}"


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What CompleteConnection needs: the PKCE verifier (secret, sealed at rest), the
    redirect URI, and when the `state` stops being accepted."""

    state_hash: bytes
    code_verifier: str = field(repr=False)
    redirect_uri: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    """Upstream secrets, in memory only; sealed at rest, bound to their connection."""

    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)


def connection_id_from_name(name: str, field_name: str = "name") -> str:
    collection, _, connection_id = name.partition("/")
    if collection != "connections" or not CONNECTION_ID.match(connection_id):
        raise invalid("RESOURCE_NAME_INVALID", field_name, "expected connections/{id}")
    return connection_id


class ConnectionRepository(Protocol):
    async def add(
        self,
        connection: Connection,
        pending: PendingAuthorization | None,
        credentials: Credentials | None,
    ) -> None: ...

    async def get(self, connection_id: str) -> Connection | None: ...

    async def pending(self, state_hash: bytes) -> tuple[Connection, PendingAuthorization] | None:
        """The PENDING connection waiting for this state, whatever its expiry."""
        ...

    async def consume_pending(self, connection_id: str, now: datetime) -> bool:
        """Use the pending authorization once (False if already used or expired)."""
        ...

    async def reopen_pending(self, connection_id: str, pending: PendingAuthorization) -> None:
        """Put back a pending authorization that `consume_pending` took, for a retry."""
        ...

    async def require_reauthorization(self, provider: str, origin: str, now: datetime) -> int:
        """Every OAuth connection of `provider` not bound to `origin` becomes NEEDS_REAUTH,
        its tokens and pending authorization wiped; how many did."""
        ...

    async def page(
        self, user_id: str, before: tuple[str, str] | None, limit: int
    ) -> list[Connection]: ...

    async def save(self, connection: Connection, credentials: Credentials | None) -> None:
        """Write the connection's fields, and its credentials when given (None keeps them;
        empty Credentials wipe them)."""
        ...

    async def credentials(self, connection_id: str) -> Credentials | None: ...

    async def delete(self, connection_id: str) -> bool: ...


class RefreshLock(Protocol):
    def hold(self, connection_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive across every replica for the duration of one refresh."""
        ...
