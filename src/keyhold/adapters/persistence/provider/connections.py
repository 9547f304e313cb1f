"""ConnectionRepository on SQL: credentials and PKCE verifiers sealed at rest, each
bound to its connection and field (the sealing context), so a ciphertext copied into
another row or column does not open."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import connections
from keyhold.domain.provider.connections import (
    Connection,
    ConnectionState,
    Credentials,
    PendingAuthorization,
)
from keyhold.domain.sealing import Sealer

_CREDENTIAL_FIELDS = ("access_token", "refresh_token", "api_key")


def sealing_context(connection_id: str, field: str) -> str:
    return f"keyhold/connection/{connection_id}/{field}"


def _connection(row: Row[Any]) -> Connection:
    return Connection(
        id=row.id,
        user_id=row.user_id,
        provider=row.provider,
        state=ConnectionState(row.state),
        scopes=tuple(json.loads(row.scopes)),
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_refresh_at=row.last_refresh_at,
        credential_origin=row.credential_origin,
    )


class SqlConnectionRepository:
    def __init__(self, connection: AsyncConnection, sealer: Sealer) -> None:
        self._connection = connection
        self._sealer = sealer

    def _seal(self, connection_id: str, field: str, value: str) -> bytes | None:
        if not value:
            return None
        return self._sealer.seal(value, sealing_context(connection_id, field))[0]

    def _open(self, connection_id: str, field: str, blob: bytes | None, key_id: str) -> str:
        if blob is None:
            return ""
        return self._sealer.open(blob, key_id, sealing_context(connection_id, field))

    def _credential_values(self, connection_id: str, credentials: Credentials) -> dict[str, Any]:
        values: dict[str, Any] = {"credential_key_id": self._sealer.sealing_key_id}
        for field in _CREDENTIAL_FIELDS:
            values[f"{field}_ciphertext"] = self._seal(
                connection_id, field, getattr(credentials, field)
            )
        return values

    @staticmethod
    def _fields(connection: Connection) -> dict[str, Any]:
        return {
            "state": connection.state.value,
            "scopes": json.dumps(list(connection.scopes)),
            "expires_at": connection.expires_at,
            "updated_at": connection.updated_at,
            "last_refresh_at": connection.last_refresh_at,
            "credential_origin": connection.credential_origin,
        }

    async def add(
        self,
        connection: Connection,
        pending: PendingAuthorization | None,
        credentials: Credentials | None,
    ) -> None:
        values: dict[str, Any] = {
            "id": connection.id,
            "user_id": connection.user_id,
            "provider": connection.provider,
            "created_at": connection.created_at,
            "redirect_uri": pending.redirect_uri if pending else "",
            "credential_key_id": self._sealer.sealing_key_id,
            **self._fields(connection),
        }
        if pending is not None:
            values.update(
                state_hash=pending.state_hash,
                verifier_ciphertext=self._seal(connection.id, "verifier", pending.code_verifier),
                authorize_expires_at=pending.expires_at,
            )
        if credentials is not None:
            values.update(self._credential_values(connection.id, credentials))
        await self._connection.execute(connections.insert().values(**values))

    async def get(self, connection_id: str) -> Connection | None:
        query = select(connections).where(connections.c.id == connection_id)
        row = (await self._connection.execute(query)).first()
        return _connection(row) if row else None

    async def pending(self, state_hash: bytes) -> tuple[Connection, PendingAuthorization] | None:
        query = select(connections).where(
            connections.c.state_hash == state_hash,
            connections.c.state == ConnectionState.PENDING.value,
        )
        row = (await self._connection.execute(query)).first()
        if row is None or row.verifier_ciphertext is None:
            return None
        pending = PendingAuthorization(
            state_hash=state_hash,
            code_verifier=self._open(
                row.id, "verifier", row.verifier_ciphertext, row.credential_key_id
            ),
            redirect_uri=row.redirect_uri,
            expires_at=row.authorize_expires_at,
        )
        return _connection(row), pending

    async def consume_pending(self, connection_id: str, now: datetime) -> bool:
        result = await self._connection.execute(
            update(connections)
            .where(
                connections.c.id == connection_id,
                connections.c.state_hash.is_not(None),
                connections.c.authorize_expires_at > now,
            )
            .values(state_hash=None, verifier_ciphertext=None, authorize_expires_at=None)
        )
        return bool(result.rowcount)

    async def reopen_pending(self, connection_id: str, pending: PendingAuthorization) -> None:
        await self._connection.execute(
            update(connections)
            .where(
                connections.c.id == connection_id,
                connections.c.state == ConnectionState.PENDING.value,
                connections.c.state_hash.is_(None),
            )
            .values(
                state_hash=pending.state_hash,
                verifier_ciphertext=self._seal(connection_id, "verifier", pending.code_verifier),
                authorize_expires_at=pending.expires_at,
                credential_key_id=self._sealer.sealing_key_id,
            )
        )

    async def require_reauthorization(self, provider: str, origin: str, now: datetime) -> int:
        c = connections.c
        result = await self._connection.execute(
            update(connections)
            .where(
                c.provider == provider,
                c.credential_origin != "",
                c.credential_origin != origin,
                c.state != ConnectionState.REVOKED.value,
            )
            .values(
                state=ConnectionState.NEEDS_REAUTH.value,
                updated_at=now,
                access_token_ciphertext=None,
                refresh_token_ciphertext=None,
                state_hash=None,
                verifier_ciphertext=None,
                authorize_expires_at=None,
            )
        )
        return int(result.rowcount or 0)

    async def page(
        self, user_id: str, before: tuple[str, str] | None, limit: int
    ) -> list[Connection]:
        c = connections.c
        query = (
            select(connections)
            .where(c.user_id == user_id)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        if before is not None:
            created = datetime.fromisoformat(before[0])
            query = query.where(
                or_(c.created_at < created, and_(c.created_at == created, c.id < before[1]))
            )
        return [_connection(row) for row in await self._connection.execute(query)]

    async def save(self, connection: Connection, credentials: Credentials | None) -> None:
        values = self._fields(connection)
        if credentials is not None:
            values.update(self._credential_values(connection.id, credentials))
        await self._connection.execute(
            update(connections).where(connections.c.id == connection.id).values(**values)
        )

    async def credentials(self, connection_id: str) -> Credentials | None:
        query = select(connections).where(connections.c.id == connection_id)
        row = (await self._connection.execute(query)).first()
        if row is None:
            return None
        return Credentials(
            **{
                field: self._open(
                    row.id, field, getattr(row, f"{field}_ciphertext"), row.credential_key_id
                )
                for field in _CREDENTIAL_FIELDS
            }
        )

    async def delete(self, connection_id: str) -> bool:
        result = await self._connection.execute(
            delete(connections).where(connections.c.id == connection_id)
        )
        return bool(result.rowcount)
