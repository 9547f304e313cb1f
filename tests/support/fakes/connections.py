"""Provider connections in memory: the repository, and the per-connection refresh lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime

from keyhold.domain.provider.connections import (
    Connection,
    ConnectionState,
    Credentials,
    PendingAuthorization,
)
from tests.support.fakes.store import (
    ConnectionRow,
    IntegrityViolation,
    Transaction,
    before_cursor,
)

_NO_CREDENTIALS = Credentials()


def _created(connection: Connection) -> tuple[datetime, str]:
    return connection.created_at, connection.id


class InMemoryConnectionRepository:
    """Credentials and verifiers are kept as given: sealing them is the SQL adapter's
    concern, not a rule the use cases rely on."""

    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def add(
        self,
        connection: Connection,
        pending: PendingAuthorization | None,
        credentials: Credentials | None,
    ) -> None:
        if connection.user_id not in self._tx.users:
            raise IntegrityViolation(f"no user {connection.user_id!r} for {connection.name}")
        if connection.provider not in self._tx.providers:
            raise IntegrityViolation(f"no provider {connection.provider!r} for {connection.name}")
        if pending is not None and await self._pending_row(pending.state_hash) is not None:
            raise IntegrityViolation("duplicate state hash")
        row = ConnectionRow(connection, pending, credentials or _NO_CREDENTIALS)
        self._tx.connections.insert(connection.id, row)

    async def get(self, connection_id: str) -> Connection | None:
        row = self._tx.connections.get(connection_id)
        return row.connection if row else None

    async def _pending_row(self, state_hash: bytes) -> ConnectionRow | None:
        return next(
            (
                row
                for row in self._tx.connections.values()
                if row.pending is not None and row.pending.state_hash == state_hash
            ),
            None,
        )

    async def pending(self, state_hash: bytes) -> tuple[Connection, PendingAuthorization] | None:
        row = await self._pending_row(state_hash)
        if (
            row is None
            or row.pending is None
            or row.connection.state is not ConnectionState.PENDING
        ):
            return None
        return row.connection, row.pending

    async def consume_pending(self, connection_id: str, now: datetime) -> bool:
        row = self._tx.connections.get(connection_id)
        if row is None or row.pending is None or not row.pending.expires_at > now:
            return False
        self._tx.connections.put(connection_id, replace(row, pending=None))
        return True

    async def reopen_pending(self, connection_id: str, pending: PendingAuthorization) -> None:
        row = self._tx.connections.get(connection_id)
        if row is None or row.pending is not None:
            return
        if row.connection.state is not ConnectionState.PENDING:
            return
        self._tx.connections.put(connection_id, replace(row, pending=pending))

    async def require_reauthorization(self, provider: str, origin: str, now: datetime) -> int:
        def moved(row: ConnectionRow) -> bool:
            connection = row.connection
            return (
                connection.provider == provider
                and connection.credential_origin not in ("", origin)
                and connection.state is not ConnectionState.REVOKED
            )

        rows = self._tx.connections.where(moved)
        for connection_id, row in rows:
            connection = replace(row.connection, state=ConnectionState.NEEDS_REAUTH, updated_at=now)
            wiped = Credentials(api_key=row.credentials.api_key)
            self._tx.connections.put(connection_id, ConnectionRow(connection, None, wiped))
        return len(rows)

    async def page(
        self, user_id: str, before: tuple[str, str] | None, limit: int
    ) -> list[Connection]:
        mine = [
            row.connection
            for row in self._tx.connections.values()
            if row.connection.user_id == user_id
        ]
        return before_cursor(mine, _created, before)[:limit]

    async def save(self, connection: Connection, credentials: Credentials | None) -> None:
        row = self._tx.connections.get(connection.id)
        if row is None:
            return  # an UPDATE that matches no row
        stored = row.connection
        saved = replace(
            stored,
            state=connection.state,
            scopes=connection.scopes,
            expires_at=connection.expires_at,
            updated_at=connection.updated_at,
            last_refresh_at=connection.last_refresh_at,
            credential_origin=connection.credential_origin,
        )
        kept = row.credentials if credentials is None else credentials
        self._tx.connections.put(connection.id, replace(row, connection=saved, credentials=kept))

    async def credentials(self, connection_id: str) -> Credentials | None:
        row = self._tx.connections.get(connection_id)
        return row.credentials if row else None

    async def delete(self, connection_id: str) -> bool:
        return self._tx.connections.delete(connection_id)


class InMemoryRefreshLock:
    """One refresh per connection at a time, in this process; counts the holds."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self.holds: list[str] = []

    @asynccontextmanager
    async def hold(self, connection_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        async with lock:
            self.holds.append(connection_id)
            yield
