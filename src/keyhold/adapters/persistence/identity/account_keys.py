"""AccountKeyRepository on SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import service_account_keys
from keyhold.domain.identity.account_keys import AccountKey, PublicKey, key_exists

_K = service_account_keys.c


def _key(row: Row[Any]) -> AccountKey:
    return AccountKey(
        row.account_id, PublicKey(row.key_id, row.algorithm, row.public_jwk), row.created_at
    )


class SqlAccountKeyRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, key: AccountKey) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(
                    service_account_keys.insert().values(
                        account_id=key.account_id,
                        key_id=key.key.key_id,
                        algorithm=key.key.algorithm,
                        public_jwk=key.key.public_jwk,
                        created_at=key.created_at,
                    )
                )
        except IntegrityError as exc:
            raise key_exists(key.name) from exc

    async def count(self, account_id: str) -> int:
        counted = await self._connection.scalar(
            select(func.count()).where(_K.account_id == account_id)
        )
        return int(counted or 0)

    async def page(self, account_id: str, after_key_id: str, limit: int) -> list[AccountKey]:
        query = (
            select(service_account_keys)
            .where(_K.account_id == account_id, _K.key_id > after_key_id)
            .order_by(_K.key_id)
            .limit(limit)
        )
        return [_key(row) for row in await self._connection.execute(query)]

    async def delete(self, account_id: str, key_id: str) -> bool:
        result = await self._connection.execute(
            delete(service_account_keys).where(_K.account_id == account_id, _K.key_id == key_id)
        )
        return bool(result.rowcount)
