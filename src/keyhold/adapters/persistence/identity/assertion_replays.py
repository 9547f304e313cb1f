"""AssertionReplays on SQL: a presented (issuer, jti) is inserted until it expires; a
conflict means it was presented before. One statement on both engines, so replicas
share what they have seen without Redis."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import assertion_replays
from keyhold.adapters.persistence.types import UtcDateTime

_R = assertion_replays.c


def _first_use(dialect: object) -> object:
    return (
        dialect.insert(assertion_replays)  # type: ignore[attr-defined]
        .values(
            issuer=bindparam("issuer"),
            jti=bindparam("jti"),
            expires_at=bindparam("expires_at", type_=UtcDateTime()),
        )
        .on_conflict_do_nothing()
        .returning(_R.jti)
    )


_FIRST_USE = {"postgresql": _first_use(postgresql), "sqlite": _first_use(sqlite)}
_FORGET = delete(assertion_replays).where(_R.expires_at < bindparam("before", type_=UtcDateTime()))


class SqlAssertionReplays:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def first_use(self, issuer: str, token_id: str, expires_at: datetime) -> bool:
        statement = _FIRST_USE[self._database.engine.dialect.name]
        async with self._database.autocommit() as connection:
            inserted = await connection.execute(
                statement,  # type: ignore[call-overload]
                {"issuer": issuer, "jti": token_id, "expires_at": expires_at},
            )
            return inserted.first() is not None

    async def forget_before(self, before: datetime) -> int:
        async with self._database.autocommit() as connection:
            result = await connection.execute(_FORGET, {"before": before})
            return int(result.rowcount or 0)
