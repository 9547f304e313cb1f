"""The record of client assertions seen, swept of those that expired. An assertion's
(client id, jti) is recorded by `SqlAccountKeyLookup.first_use` (`assertion_keys.py`)
with its expiry; until then a second presentation conflicts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import assertion_replays
from keyhold.adapters.persistence.types import UtcDateTime

_R = assertion_replays.c
_FORGET = delete(assertion_replays).where(_R.expires_at < bindparam("before", type_=UtcDateTime()))


class SqlAssertionReplays:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def forget_before(self, before: datetime) -> int:
        async with self._database.autocommit() as connection:
            result = await connection.execute(_FORGET, {"before": before})
            return int(result.rowcount or 0)
