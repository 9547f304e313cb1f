"""LoginFailureStore on SQL: a password check is reserved on all its counters by one
conditional upsert, on SQLite and PostgreSQL alike.

The upsert inserts or increments every counter's row, but only if no row is locked:
`INSERT … SELECT … WHERE NOT EXISTS (a locked row) ON CONFLICT DO UPDATE … WHERE (this
row is not locked) RETURNING`. The per-row condition is checked on the row's latest
version under its row lock, so concurrent reservations never take a counter past its
threshold; the lock a reservation earns is set in the same write. The rows returned
are the counters reserved. On PostgreSQL a lock set by a concurrent reservation after
this statement's snapshot can still refuse some rows and not others; the rows that
were counted are then given back, and the check is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    bindparam,
    case,
    cast,
    delete,
    exists,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import login_failures
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.lockout import (
    NO_FAILURES,
    Counter,
    FailureCount,
    Reservation,
    Scope,
)

_T = login_failures.c
_COUNTS = select(_T.key, _T.failures, _T.locked_until, _T.updated_at).where(
    _T.key.in_(bindparam("keys", expanding=True))
)


def _key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _lock_after(counter: Counter, failures: Any, at: datetime) -> ColumnElement[Any]:
    """The lock `failures` earns on `counter`: NULL below its threshold."""
    steps = counter.cooldowns
    whens = [
        (failures == counter.threshold + index, literal(at + step, UtcDateTime()))
        for index, step in enumerate(steps[:-1])
    ]
    whens.append((failures >= counter.threshold, literal(at + steps[-1], UtcDateTime())))
    return case(*whens, else_=literal(None, UtcDateTime()))


def _per_counter(hashed: Sequence[str], values: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    """The value for the row being written, chosen by its key."""
    return case(
        *((_T.key == key, value) for key, value in zip(hashed[:-1], values[:-1], strict=True)),
        else_=values[-1],
    )


class SqlLoginFailureStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._dialect: Any = postgresql if database.is_postgres else sqlite

    def _typed(self, value: object, type_: Any) -> ColumnElement[Any]:
        # PostgreSQL must be told a bare parameter's type in a SELECT list; SQLite's CAST
        # to a date type would turn the text into a number.
        parameter = literal(value, type_)
        return cast(parameter, type_) if self._database.is_postgres else parameter

    def _reservation(
        self, counters: Sequence[Counter], hashed: Sequence[str], at: datetime, forget: datetime
    ) -> Any:
        first = union_all(
            *(
                select(
                    self._typed(key, String(64)).label("key"),
                    self._typed(1, Integer()).label("failures"),
                    self._typed(
                        at + counter.cooldown(1) if counter.cooldown(1) else None, UtcDateTime()
                    ).label("locked_until"),
                    self._typed(at, UtcDateTime()).label("updated_at"),
                )
                for counter, key in zip(counters, hashed, strict=True)
            )
        ).subquery("proposed")
        other = login_failures.alias("other")
        any_locked = exists().where(
            other.c.key.in_(hashed), other.c.locked_until > at, other.c.updated_at >= forget
        )
        insert = self._dialect.insert(login_failures).from_select(
            ["key", "failures", "locked_until", "updated_at"],
            select(first.c.key, first.c.failures, first.c.locked_until, first.c.updated_at).where(
                ~any_locked
            ),
        )
        failures = case((_T.updated_at < forget, 1), else_=_T.failures + 1)
        return insert.on_conflict_do_update(
            index_elements=[_T.key],
            set_={
                "failures": failures,
                "locked_until": _per_counter(
                    hashed, [_lock_after(counter, failures, at) for counter in counters]
                ),
                "updated_at": at,
            },
            where=or_(_T.updated_at < forget, _T.locked_until.is_(None), _T.locked_until <= at),
        ).returning(_T.key, _T.failures, _T.locked_until)

    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        # One order for every reservation: PostgreSQL then takes the row locks in one
        # order, and concurrent reservations cannot deadlock.
        ordered = sorted(counters, key=lambda counter: _key(counter.key))
        hashed = [_key(counter.key) for counter in ordered]
        forget = at - forget_after
        async with self._database.autocommit() as connection:
            rows = (await connection.execute(self._reservation(ordered, hashed, at, forget))).all()
            counted = {row.key: FailureCount(row.failures, row.locked_until) for row in rows}
            if len(counted) == len(ordered):
                return Reservation(tuple(counters), tuple(counted[_key(c.key)] for c in counters))
            if counted:
                taken = [c for c, key in zip(ordered, hashed, strict=True) if key in counted]
                await connection.execute(self._give_back(taken, None))
            found = (await connection.execute(_COUNTS, {"keys": hashed})).all()
        refusing = [
            (row.locked_until, row.key)
            for row in found
            if row.key not in counted
            and row.locked_until is not None
            and row.locked_until > at
            and row.updated_at >= forget
        ]
        locked_until, key = max(refusing, default=(at, hashed[0]))
        refused_by = next(c for c, h in zip(ordered, hashed, strict=True) if h == key)
        return Reservation(tuple(counters), refused_by=refused_by, locked_until=locked_until)

    def _give_back(self, counters: Sequence[Counter], reset: Scope | None) -> Any:
        """Uncount a reservation. Its counters were unlocked when it was granted, and any
        lock on them since is the one it set (others were refused meanwhile): lifted."""
        hashed = [_key(counter.key) for counter in counters]
        failures: ColumnElement[Any] = case((_T.failures > 0, _T.failures - 1), else_=0)
        reset_key = next((_key(c.key) for c in counters if c.scope is reset), None)
        if reset_key is not None:
            failures = case((_T.key == reset_key, 0), else_=failures)
        return (
            update(login_failures)
            .where(_T.key.in_(hashed))
            .values(failures=failures, locked_until=None)
        )

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        if not reservation.granted:
            return
        async with self._database.autocommit() as connection:
            await connection.execute(self._give_back(reservation.counters, reset))

    async def forget_before(self, before: datetime) -> int:
        async with self._database.autocommit() as connection:
            result = await connection.execute(delete(login_failures).where(_T.updated_at < before))
        return int(result.rowcount or 0)

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        hashed = [_key(key) for key in keys]
        async with self._database.autocommit() as connection:
            rows = await connection.execute(_COUNTS, {"keys": hashed})
            found = {row.key: FailureCount(row.failures, row.locked_until) for row in rows}
        return [found.get(key, NO_FAILURES) for key in hashed]
