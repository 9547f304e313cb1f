"""AccountKeyLookup on SQL: the reads and the once-only record of the client-assertion
grant, outside any unit of work. On PostgreSQL an assertion's use is one statement
(data-modifying CTEs): the key must still be registered, and (client id, jti) is
recorded only then. SQLite has no data-modifying CTE: there it is a read and an insert
on one connection, which its single writer runs in turn."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.service_accounts import account_of
from keyhold.adapters.persistence.tables import (
    assertion_replays,
    service_account_keys,
    service_accounts,
)
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.account_keys import PublicKey
from keyhold.domain.identity.service_accounts import ServiceAccount

_K, _A = service_account_keys.c, service_accounts.c
_CLIENT_ID = bindparam("client_id", type_=String())

_WITH_KEY = (
    select(
        service_accounts,
        _K.key_id.label("key_key_id"),
        _K.algorithm.label("key_algorithm"),
        _K.public_jwk.label("key_public_jwk"),
    )
    .outerjoin(
        service_account_keys,
        and_(_K.account_id == _A.id, _K.key_id == bindparam("key_id")),
    )
    .where(_A.client_id == _CLIENT_ID)
)
# The account, if it still holds this very key.
_HOLDING_KEY = (
    select(service_accounts)
    .join(service_account_keys, _K.account_id == _A.id)
    .where(
        _A.client_id == _CLIENT_ID,
        _K.key_id == bindparam("key_id"),
        _K.public_jwk == bindparam("public_jwk"),
    )
)


def _first_use_in_one_statement() -> Any:
    holder = _HOLDING_KEY.cte("holder")
    recorded = (
        postgresql.insert(assertion_replays)
        .from_select(
            ["issuer", "jti", "expires_at"],
            select(
                _CLIENT_ID,
                bindparam("jti", type_=String()),
                bindparam("expires_at", type_=UtcDateTime()),
            ).select_from(holder),
        )
        .on_conflict_do_nothing()
        .returning(assertion_replays.c.jti)
        .cte("recorded")
    )
    return select(holder, exists(select(recorded.c.jti)).label("fresh"))


_FIRST_USE_PG = _first_use_in_one_statement()
_RECORD_SQLITE = (
    sqlite.insert(assertion_replays)
    .values(
        issuer=bindparam("issuer"),
        jti=bindparam("jti"),
        expires_at=bindparam("expires_at", type_=UtcDateTime()),
    )
    .on_conflict_do_nothing()
    .returning(assertion_replays.c.jti)
)


class SqlAccountKeyLookup:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def account_with_key(
        self, client_id: str, key_id: str
    ) -> tuple[ServiceAccount, PublicKey | None] | None:
        async with self._database.autocommit() as connection:
            row = (
                await connection.execute(_WITH_KEY, {"client_id": client_id, "key_id": key_id})
            ).first()
        if row is None:
            return None
        key = (
            PublicKey(row.key_key_id, row.key_algorithm, row.key_public_jwk)
            if row.key_key_id is not None
            else None
        )
        return account_of(row), key

    async def first_use(
        self, client_id: str, key: PublicKey, token_id: str, expires_at: datetime
    ) -> tuple[ServiceAccount, bool] | None:
        holding = {"client_id": client_id, "key_id": key.key_id, "public_jwk": key.public_jwk}
        recorded = {"issuer": client_id, "jti": token_id, "expires_at": expires_at}
        async with self._database.autocommit() as connection:
            if self._database.is_postgres:
                row = (
                    await connection.execute(
                        _FIRST_USE_PG, {**holding, "jti": token_id, "expires_at": expires_at}
                    )
                ).first()
                return None if row is None else (account_of(row), bool(row.fresh))
            row = (await connection.execute(_HOLDING_KEY, holding)).first()
            if row is None:
                return None
            inserted = await connection.execute(_RECORD_SQLITE, recorded)
            return account_of(row), inserted.first() is not None
