"""LoginFailureStore on SQL: atomic increments with an upsert."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import login_failures
from keyhold.domain.identity.lockout import NO_FAILURES, FailureCount, LockoutPolicy

_COUNTS = select(
    login_failures.c.key, login_failures.c.failures, login_failures.c.locked_until
).where(login_failures.c.key.in_(bindparam("keys", expanding=True)))


def _key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SqlLoginFailureStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        hashed = [_key(key) for key in keys]
        async with self._database.autocommit() as connection:
            rows = await connection.execute(_COUNTS, {"keys": hashed})
            found = {row.key: FailureCount(row.failures, row.locked_until) for row in rows}
        return [found.get(key, NO_FAILURES) for key in hashed]

    async def record_failure(
        self, key: str, at: datetime, policy: LockoutPolicy, threshold: int
    ) -> FailureCount:
        dialect = postgresql if self._database.is_postgres else sqlite
        hashed = _key(key)
        insert = dialect.insert(login_failures).values(key=hashed, failures=1, updated_at=at)
        upsert = insert.on_conflict_do_update(
            index_elements=[login_failures.c.key],
            set_={
                "failures": case(
                    (login_failures.c.updated_at < at - policy.forget_after, 1),
                    else_=login_failures.c.failures + 1,
                ),
                "updated_at": at,
            },
        ).returning(login_failures.c.failures)
        async with self._database.transaction() as connection:
            failures = int((await connection.execute(upsert)).scalar_one())
            cooldown = policy.cooldown(failures, threshold)
            locked_until = at + cooldown if cooldown else None
            if locked_until is not None:
                await connection.execute(
                    update(login_failures)
                    .where(
                        login_failures.c.key == hashed,
                        or_(
                            login_failures.c.locked_until.is_(None),
                            login_failures.c.locked_until < locked_until,
                        ),
                    )
                    .values(locked_until=locked_until)
                )
        return FailureCount(failures, locked_until)

    async def reset(self, key: str) -> None:
        async with self._database.autocommit() as connection:
            await connection.execute(
                delete(login_failures).where(login_failures.c.key == _key(key))
            )
