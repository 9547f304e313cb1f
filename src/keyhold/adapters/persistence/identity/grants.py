"""GrantRepository on SQL: one row per held scope or role. Adding what is held already
changes nothing; removing what is not held changes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import (
    api_resource_role_scopes,
    api_resources,
    service_account_scope_grants,
    token_exchange_grants,
    user_role_grants,
)
from keyhold.domain.identity.grants import ExchangeTerms, HeldByResource


def _exchange_terms() -> Any:
    """One row naming the resource, one per scope the account may delegate there, and
    one per (role, scope) the user's roles there bundle (scope NULL for a role that
    bundles none)."""
    resource, delegated, held, bundled = (
        api_resources.c,
        token_exchange_grants.c,
        user_role_grants.c,
        api_resource_role_scopes.c,
    )
    audience = bindparam("audience", type_=String())
    nothing = cast(null(), String)
    return union_all(
        select(literal("resource").label("kind"), resource.id, nothing).where(
            resource.audience == audience
        ),
        select(literal("delegable"), delegated.scope, nothing)
        .join_from(token_exchange_grants, api_resources, delegated.resource_id == resource.id)
        .where(resource.audience == audience, delegated.account_id == bindparam("account_id")),
        select(literal("role"), held.role, bundled.scope)
        .join_from(user_role_grants, api_resources, held.resource_id == resource.id)
        .outerjoin(
            api_resource_role_scopes,
            and_(bundled.resource_id == held.resource_id, bundled.role == held.role),
        )
        .where(resource.audience == audience, held.user_id == bindparam("user_id")),
    )


_EXCHANGE_TERMS = _exchange_terms()


def _account_scopes_at() -> Any:
    """One row naming the resource, and one per scope the account is granted there."""
    resource, granted = api_resources.c, service_account_scope_grants.c
    audience = bindparam("audience", type_=String())
    return union_all(
        select(literal("resource").label("kind"), resource.id).where(resource.audience == audience),
        select(literal("scope"), granted.scope)
        .join_from(service_account_scope_grants, api_resources, granted.resource_id == resource.id)
        .where(resource.audience == audience, granted.account_id == bindparam("account_id")),
    )


_ACCOUNT_SCOPES_AT = _account_scopes_at()


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

    async def account_scopes_at(self, account_id: str, audience: str) -> frozenset[str] | None:
        rows = list(
            await self._connection.execute(
                _ACCOUNT_SCOPES_AT, {"audience": audience, "account_id": account_id}
            )
        )
        if not any(kind == "resource" for kind, _ in rows):
            return None
        return frozenset(name for kind, name in rows if kind == "scope")

    async def exchange_terms(
        self, account_id: str, user_id: str, audience: str
    ) -> ExchangeTerms | None:
        rows = await self._connection.execute(
            _EXCHANGE_TERMS,
            {"audience": audience, "account_id": account_id, "user_id": user_id},
        )
        resource_id = ""
        delegable: set[str] = set()
        role_scopes: dict[str, set[str]] = defaultdict(set)
        for kind, name, scope in rows:
            if kind == "resource":
                resource_id = name
            elif kind == "delegable":
                delegable.add(name)
            else:
                role_scopes[name].update(() if scope is None else (scope,))
        if not resource_id:
            return None
        return ExchangeTerms(
            resource_id,
            frozenset(delegable),
            {role: frozenset(scopes) for role, scopes in role_scopes.items()},
        )

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
