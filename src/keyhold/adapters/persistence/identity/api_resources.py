"""ApiResourceRepository on SQL: a resource is its row, its scopes, its roles and the
scopes each role bundles. Foreign keys carry the consequences of a change: a scope or
role that goes leaves every role and grant naming it, a resource that goes leaves all."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, delete, func, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import (
    api_resource_role_scopes,
    api_resource_roles,
    api_resource_scopes,
    api_resources,
    service_account_scope_grants,
    token_exchange_grants,
    user_role_grants,
)
from keyhold.domain.identity.api_resources import ApiResource, resource_exists

_R = api_resources.c


class SqlApiResourceRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, resource: ApiResource) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(
                    api_resources.insert().values(
                        id=resource.id,
                        audience=resource.audience,
                        display_name=resource.display_name,
                        built_in=False,
                        created_at=resource.created_at,
                        updated_at=resource.updated_at,
                    )
                )
                await self._insert_definition(resource)
        except IntegrityError as exc:  # a concurrent create took the id or the audience
            raise resource_exists(resource.name) from exc

    async def _insert_definition(self, resource: ApiResource) -> None:
        if resource.scopes:
            await self._connection.execute(
                api_resource_scopes.insert(),
                [
                    {"resource_id": resource.id, "name": name, "description": description}
                    for name, description in resource.scopes.items()
                ],
            )
        await self._insert_roles(resource, resource.roles.keys())

    async def _insert_roles(self, resource: ApiResource, roles: Collection[str]) -> None:
        if roles:
            await self._connection.execute(
                api_resource_roles.insert(),
                [{"resource_id": resource.id, "name": role} for role in roles],
            )
        bundled = [
            {"resource_id": resource.id, "role": role, "scope": scope}
            for role, scopes in resource.roles.items()
            for scope in sorted(scopes)
        ]
        if bundled:
            await self._connection.execute(api_resource_role_scopes.insert(), bundled)

    async def get(self, resource_id: str) -> ApiResource | None:
        found = await self._resources(select(api_resources).where(_R.id == resource_id))
        return found[0] if found else None

    async def by_audience(self, audience: str) -> ApiResource | None:
        found = await self._resources(select(api_resources).where(_R.audience == audience))
        return found[0] if found else None

    async def page(self, after_id: str, limit: int) -> list[ApiResource]:
        return await self._resources(
            select(api_resources).where(_R.id > after_id).order_by(_R.id).limit(limit)
        )

    async def _resources(self, query: Any) -> list[ApiResource]:
        rows = (await self._connection.execute(query)).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        scopes: dict[str, dict[str, str]] = defaultdict(dict)
        for scope in await self._connection.execute(
            select(api_resource_scopes).where(api_resource_scopes.c.resource_id.in_(ids))
        ):
            scopes[scope.resource_id][scope.name] = scope.description
        roles: dict[str, dict[str, set[str]]] = defaultdict(dict)
        for role in await self._connection.execute(
            select(api_resource_roles).where(api_resource_roles.c.resource_id.in_(ids))
        ):
            roles[role.resource_id][role.name] = set()
        for bundled in await self._connection.execute(
            select(api_resource_role_scopes).where(api_resource_role_scopes.c.resource_id.in_(ids))
        ):
            roles[bundled.resource_id][bundled.role].add(bundled.scope)
        return [_resource(row, scopes[row.id], roles[row.id]) for row in rows]

    async def replace(self, resource: ApiResource) -> None:
        c = self._connection
        try:
            async with c.begin_nested():
                await c.execute(
                    update(api_resources)
                    .where(_R.id == resource.id)
                    .values(
                        audience=resource.audience,
                        display_name=resource.display_name,
                        updated_at=resource.updated_at,
                    )
                )
        except IntegrityError as exc:  # a concurrent change took the audience
            raise resource_exists(resource.name) from exc
        s, r = api_resource_scopes.c, api_resource_roles.c
        await c.execute(
            delete(api_resource_scopes).where(
                s.resource_id == resource.id, s.name.not_in(list(resource.scopes))
            )
        )
        await c.execute(
            delete(api_resource_roles).where(
                r.resource_id == resource.id, r.name.not_in(list(resource.roles))
            )
        )
        await c.execute(
            delete(api_resource_role_scopes).where(
                api_resource_role_scopes.c.resource_id == resource.id
            )
        )
        kept = set(await c.scalars(select(s.name).where(s.resource_id == resource.id)))
        for name, description in resource.scopes.items():
            if name in kept:
                await c.execute(
                    update(api_resource_scopes)
                    .where(s.resource_id == resource.id, s.name == name)
                    .values(description=description)
                )
        new_scopes = [
            {"resource_id": resource.id, "name": name, "description": description}
            for name, description in resource.scopes.items()
            if name not in kept
        ]
        if new_scopes:
            await c.execute(api_resource_scopes.insert(), new_scopes)
        held = set(await c.scalars(select(r.name).where(r.resource_id == resource.id)))
        await self._insert_roles(resource, [role for role in resource.roles if role not in held])

    async def grants_using(self, resource_id: str) -> int:
        counted = union_all(
            *(
                select(func.count()).where(table.c.resource_id == resource_id)
                for table in (service_account_scope_grants, user_role_grants, token_exchange_grants)
            )
        ).subquery()
        total = await self._connection.scalar(select(func.sum(counted.c[0])))
        return int(total or 0)

    async def delete(self, resource_id: str) -> bool:
        result = await self._connection.execute(delete(api_resources).where(_R.id == resource_id))
        return bool(result.rowcount)


def _resource(row: Row[Any], scopes: dict[str, str], roles: dict[str, set[str]]) -> ApiResource:
    return ApiResource(
        id=row.id,
        display_name=row.display_name,
        audience=row.audience or "",
        scopes=dict(sorted(scopes.items())),
        roles={role: frozenset(roles[role]) for role in sorted(roles)},
        built_in=row.built_in,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
