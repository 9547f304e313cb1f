"""ProviderRepository on SQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row, delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import connections, providers
from keyhold.domain.provider.providers import (
    AuthType,
    Provider,
    ProviderExists,
    SealedClientSecret,
)


def _provider(row: Row[Any]) -> Provider:
    return Provider(
        slug=row.slug,
        display_name=row.display_name,
        auth_type=AuthType(row.auth_type),
        authorization_endpoint=row.authorization_endpoint,
        token_endpoint=row.token_endpoint,
        revocation_endpoint=row.revocation_endpoint,
        client_id=row.client_id,
        default_scopes=tuple(json.loads(row.default_scopes)),
        has_client_secret=row.secret_ciphertext is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        secret_origin=row.secret_origin,
    )


def _values(provider: Provider) -> dict[str, Any]:
    return {
        "display_name": provider.display_name,
        "auth_type": provider.auth_type.value,
        "authorization_endpoint": provider.authorization_endpoint,
        "token_endpoint": provider.token_endpoint,
        "revocation_endpoint": provider.revocation_endpoint,
        "client_id": provider.client_id,
        "default_scopes": json.dumps(list(provider.default_scopes)),
        "redirect_uris": json.dumps(list(provider.redirect_uris)),
        "secret_origin": provider.secret_origin,
        "updated_at": provider.updated_at,
    }


class SqlProviderRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(
                    providers.insert().values(
                        slug=provider.slug,
                        created_at=provider.created_at,
                        secret_ciphertext=sealed_secret,
                        secret_key_id=secret_key_id,
                        **_values(provider),
                    )
                )
        except IntegrityError as exc:
            raise ProviderExists(provider.slug) from exc

    async def get(self, slug: str) -> Provider | None:
        row = (
            await self._connection.execute(select(providers).where(providers.c.slug == slug))
        ).first()
        return _provider(row) if row else None

    async def client_secret(self, slug: str) -> SealedClientSecret | None:
        columns = (
            providers.c.secret_ciphertext,
            providers.c.secret_key_id,
            providers.c.secret_origin,
        )
        row = (
            await self._connection.execute(select(*columns).where(providers.c.slug == slug))
        ).first()
        if row is None or row.secret_ciphertext is None:
            return None
        return SealedClientSecret(row.secret_ciphertext, row.secret_key_id, row.secret_origin)

    async def page(self, after: str | None, limit: int) -> list[Provider]:
        query = select(providers).order_by(providers.c.slug).limit(limit)
        if after is not None:
            query = query.where(providers.c.slug > after)
        return [_provider(row) for row in await self._connection.execute(query)]

    async def update(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        values = _values(provider)
        if sealed_secret is not None:
            values.update(secret_ciphertext=sealed_secret, secret_key_id=secret_key_id)
        await self._connection.execute(
            update(providers).where(providers.c.slug == provider.slug).values(**values)
        )

    async def delete(self, slug: str) -> bool:
        result = await self._connection.execute(delete(providers).where(providers.c.slug == slug))
        return bool(result.rowcount)

    async def has_connections(self, slug: str) -> bool:
        found = await self._connection.scalar(
            select(exists().where(connections.c.provider == slug))
        )
        return bool(found)
