"""GrantRepository on SQL: one row per held scope or role. Adding what is held already
changes nothing; removing what is not held changes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import (
    service_account_scope_grants,
    token_exchange_grants,
    user_role_grants,
)
from keyhold.domain.identity.grants import HeldByResource


class SqlGrantRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def _held(self, table: Table, holder: str, held: str, holders: Sequence[str]) -> Any:
        query = select(table.c[holder], table.c.resource_id, table.c[held]).where(
            table.c[holder].in_(list(holders))
        )
        found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for row in await self._connection.execute(query):
            found[row[0]][row[1]].add(row[2])
        return {
            who: {resource: frozenset(items) for resource, items in sorted(by.items())}
            for who, by in found.items()
        }

    async def _add(self, table: Table, rows: list[dict[str, str]]) -> None:
        if not rows:
            return
        dialect = postgresql if self._connection.dialect.name == "postgresql" else sqlite
        await self._connection.execute(dialect.insert(table).on_conflict_do_nothing(), rows)

    async def _remove(
        self, table: Table, holder: str, who: str, resource_id: str, held: str, items: Any
    ) -> bool:
        query = delete(table).where(table.c[holder] == who, table.c.resource_id == resource_id)
        if items is not None:
            query = query.where(table.c[held].in_(sorted(items)))
        result = await self._connection.execute(query)
        return bool(result.rowcount)

    async def account_scopes(self, account_ids: Sequence[str]) -> dict[str, HeldByResource]:
        if not account_ids:
            return {}
        held: dict[str, HeldByResource] = await self._held(
            service_account_scope_grants, "account_id", "scope", account_ids
        )
        return held

    async def add_account_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None:
        await self._add(
            service_account_scope_grants,
            [
                {"account_id": account_id, "resource_id": resource_id, "scope": scope}
                for scope in sorted(scopes)
            ],
        )

    async def remove_account_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None:
        await self._remove(
            service_account_scope_grants, "account_id", account_id, resource_id, "scope", scopes
        )

    async def user_roles(self, user_id: str) -> HeldByResource:
        held: dict[str, HeldByResource] = await self._held(
            user_role_grants, "user_id", "role", [user_id]
        )
        return held.get(user_id, {})

    async def add_user_roles(self, user_id: str, resource_id: str, roles: frozenset[str]) -> None:
        await self._add(
            user_role_grants,
            [
                {"user_id": user_id, "resource_id": resource_id, "role": role}
                for role in sorted(roles)
            ],
        )

    async def remove_user_roles(
        self, user_id: str, resource_id: str, roles: frozenset[str]
    ) -> None:
        await self._remove(user_role_grants, "user_id", user_id, resource_id, "role", roles)

    async def exchange_scopes(self, account_id: str, resource_id: str) -> frozenset[str]:
        t = token_exchange_grants.c
        found = await self._connection.scalars(
            select(t.scope).where(t.account_id == account_id, t.resource_id == resource_id)
        )
        return frozenset(found)

    async def set_exchange_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None:
        await self._remove(
            token_exchange_grants, "account_id", account_id, resource_id, "scope", None
        )
        await self._add(
            token_exchange_grants,
            [
                {"account_id": account_id, "resource_id": resource_id, "scope": scope}
                for scope in sorted(scopes)
            ],
        )

    async def delete_exchange_scopes(self, account_id: str, resource_id: str) -> bool:
        return await self._remove(
            token_exchange_grants, "account_id", account_id, resource_id, "scope", None
        )
