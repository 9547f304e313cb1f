"""Service accounts on SQL: a repository for units of work, and autocommit lookups for
the token grant and the revocation check."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import service_accounts
from keyhold.domain.identity.service_accounts import ServiceAccount


def account_of(row: Row[Any]) -> ServiceAccount:
    return ServiceAccount(
        id=row.id,
        client_id=row.client_id,
        display_name=row.display_name,
        scopes=frozenset(json.loads(row.scopes)),
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        refuses_secrets=row.refuses_secrets,
    )


class SqlServiceAccountRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, account: ServiceAccount) -> None:
        await self._connection.execute(
            service_accounts.insert().values(
                id=account.id,
                client_id=account.client_id,
                display_name=account.display_name,
                scopes=json.dumps(sorted(account.scopes)),
                secret_hash=account.secret_hash,
                created_at=account.created_at,
            )
        )

    async def get(self, account_id: str) -> ServiceAccount | None:
        query = select(service_accounts).where(service_accounts.c.id == account_id)
        row = (await self._connection.execute(query)).first()
        return account_of(row) if row else None

    async def by_client_id(self, client_id: str) -> ServiceAccount | None:
        query = select(service_accounts).where(service_accounts.c.client_id == client_id)
        row = (await self._connection.execute(query)).first()
        return account_of(row) if row else None

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[ServiceAccount]:
        c = service_accounts.c
        query = select(service_accounts).order_by(c.created_at, c.id).limit(limit)
        if after is not None:
            created = datetime.fromisoformat(after[0])
            query = query.where(
                or_(c.created_at > created, and_(c.created_at == created, c.id > after[1]))
            )
        return [account_of(row) for row in await self._connection.execute(query)]

    async def update(self, account: ServiceAccount) -> None:
        await self._connection.execute(
            update(service_accounts)
            .where(service_accounts.c.id == account.id)
            .values(display_name=account.display_name, refuses_secrets=account.refuses_secrets)
        )

    async def set_scopes(self, account_id: str, scopes: frozenset[str]) -> None:
        await self._connection.execute(
            update(service_accounts)
            .where(service_accounts.c.id == account_id)
            .values(scopes=json.dumps(sorted(scopes)))
        )

    async def delete(self, account_id: str) -> bool:
        result = await self._connection.execute(
            delete(service_accounts).where(service_accounts.c.id == account_id)
        )
        return bool(result.rowcount)


# Built once, so that SQLAlchemy computes their cache keys once (see session_state).
_BY_CLIENT_ID = select(service_accounts).where(
    service_accounts.c.client_id == bindparam("client_id")
)
_EXISTS = select(service_accounts.c.id).where(service_accounts.c.id == bindparam("account_id"))


class SqlServiceAccountLookup:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def _first(self, query: Any, params: dict[str, str]) -> Row[Any] | None:
        async with self._database.autocommit() as connection:
            return (await connection.execute(query, params)).first()

    async def by_client_id(self, client_id: str) -> ServiceAccount | None:
        row = await self._first(_BY_CLIENT_ID, {"client_id": client_id})
        return account_of(row) if row else None

    async def exists(self, account_id: str) -> bool:
        return await self._first(_EXISTS, {"account_id": account_id}) is not None
