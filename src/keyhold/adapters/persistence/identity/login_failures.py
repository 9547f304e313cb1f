"""LoginFailureStore on SQL: a password check is reserved on all its counters by one
conditional upsert, on SQLite and PostgreSQL alike.

The upsert inserts or increments every counter's row, but only if no row is locked:
`INSERT … SELECT … WHERE NOT EXISTS (a locked row) ON CONFLICT DO UPDATE … WHERE (this
row is not locked) RETURNING`. The per-row condition is checked on the row's latest
version under its row lock, so concurrent reservations never take a counter past its
threshold; the lock a reservation earns is set in the same write. The rows returned
are the counters reserved. On PostgreSQL a lock set by a concurrent reservation after
this statement's snapshot can still refuse some rows and not others; the rows that
were counted are then given back, and the check is refused.

`SqlLoginFailures` runs on a unit of work's connection, within its transaction (a login
reserves its check in the transaction that finds the user, and gives it back in the one
that starts the session); `SqlLoginFailureStore` takes a connection of its own per call."""

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
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter, ColumnElement

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

# Rows are locked in key order, as the reservation locks them (PostgreSQL; SQLite has
# one writer at a time), so that a release and a reservation cannot deadlock.
_IN_KEY_ORDER = (
    select(_T.key)
    .where(_T.key.in_(bindparam("keys", expanding=True)))
    .order_by(_T.key)
    .with_for_update()
)
# Uncounts a granted reservation on `keys`, resetting the `reset` key to zero. The
# counters were unlocked when it was granted, and a lock set on them since is its own
# (other checks were refused meanwhile): lifted. `give_back_parameters` fills it in.
GIVE_BACK = (
    update(login_failures)
    .where(_T.key.in_(_IN_KEY_ORDER))
    .values(
        failures=case(
            (_T.key == bindparam("reset"), 0), (_T.failures > 0, _T.failures - 1), else_=0
        ),
        locked_until=None,
    )
)
# Rows in use by a reservation are skipped, not waited for: they are not stale.
_FORGET = delete(login_failures).where(
    _T.key.in_(
        select(_T.key)
        .where(_T.updated_at < bindparam("before", type_=UtcDateTime()))
        .order_by(_T.key)
        .with_for_update(skip_locked=True)
    )
)
# A counter's shape: its threshold and how many cooldown steps it has. One reservation
# statement is built per order of shapes (a handful per policy) and reused.
_Shape = tuple[tuple[int, int], ...]
_KEY_TYPE = String(64)


def _key_parameter(index: int) -> BindParameter[str]:
    return bindparam(f"key{index}", type_=_KEY_TYPE)


def _key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _shape(counters: Sequence[Counter]) -> _Shape:
    return tuple((counter.threshold, len(counter.cooldowns)) for counter in counters)


def _parameters(
    counters: Sequence[Counter], hashed: Sequence[str], at: datetime, forget: datetime
) -> dict[str, Any]:
    values: dict[str, Any] = {"at": at, "forget": forget}
    for index, (counter, key) in enumerate(zip(counters, hashed, strict=True)):
        first = counter.cooldown(1)
        values[f"key{index}"] = key
        values[f"first{index}"] = at + first if first else None
        for step, cooldown in enumerate(counter.cooldowns):
            values[f"lock{index}_{step}"] = at + cooldown
    return values


def _lock_after(index: int, shape: tuple[int, int], failures: Any) -> ColumnElement[Any]:
    """The lock `failures` earns on counter `index`: NULL below its threshold."""
    threshold, steps = shape
    whens = [
        (failures == threshold + step, bindparam(f"lock{index}_{step}", type_=UtcDateTime()))
        for step in range(steps - 1)
    ]
    last = bindparam(f"lock{index}_{steps - 1}", type_=UtcDateTime())
    whens.append((failures >= threshold, last))
    return case(*whens, else_=None)


def _per_counter(values: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    """The value for the row being written, chosen by its key."""
    return case(
        *((_T.key == _key_parameter(index), value) for index, value in enumerate(values[:-1])),
        else_=values[-1],
    )


_RESERVATIONS: dict[tuple[str, _Shape], Any] = {}


def _typed(name: str, type_: Any, postgres: bool) -> ColumnElement[Any]:
    # PostgreSQL must be told a bare parameter's type in a SELECT list; SQLite's CAST to
    # a date type would turn the text into a number.
    parameter = bindparam(name, type_=type_)
    return cast(parameter, type_) if postgres else parameter


def _reservation(dialect: str, shape: _Shape) -> Any:
    statement = _RESERVATIONS.get((dialect, shape))
    if statement is None:
        statement = _RESERVATIONS[dialect, shape] = _build_reservation(dialect, shape)
    return statement


def _build_reservation(dialect: str, shape: _Shape) -> Any:
    postgres = dialect == "postgresql"
    at = bindparam("at", type_=UtcDateTime())
    forget = bindparam("forget", type_=UtcDateTime())
    keys = [_key_parameter(index) for index in range(len(shape))]
    proposed = union_all(
        *(
            select(
                _typed(f"key{index}", _KEY_TYPE, postgres).label("key"),
                cast(literal(1), Integer()).label("failures"),
                _typed(f"first{index}", UtcDateTime(), postgres).label("locked_until"),
                _typed("at", UtcDateTime(), postgres).label("updated_at"),
            )
            for index in range(len(shape))
        )
    ).subquery("proposed")
    other = login_failures.alias("other")
    any_locked = exists().where(
        other.c.key.in_(keys), other.c.locked_until > at, other.c.updated_at >= forget
    )
    insert = (
        (postgresql if postgres else sqlite)
        .insert(login_failures)
        .from_select(
            ["key", "failures", "locked_until", "updated_at"],
            select(
                proposed.c.key,
                proposed.c.failures,
                proposed.c.locked_until,
                proposed.c.updated_at,
            ).where(~any_locked),
        )
    )
    failures = case((_T.updated_at < forget, 1), else_=_T.failures + 1)
    return insert.on_conflict_do_update(
        index_elements=[_T.key],
        set_={
            "failures": failures,
            "locked_until": _per_counter(
                [_lock_after(index, size, failures) for index, size in enumerate(shape)]
            ),
            "updated_at": at,
        },
        where=or_(_T.updated_at < forget, _T.locked_until.is_(None), _T.locked_until <= at),
    ).returning(_T.key, _T.failures, _T.locked_until)


def give_back_parameters(reservation: Reservation, reset: Scope | None) -> dict[str, Any]:
    """GIVE_BACK's parameters for a granted reservation."""
    counters = reservation.counters
    reset_key = next((_key(c.key) for c in counters if c.scope is reset), "")
    return {"keys": [_key(c.key) for c in counters], "reset": reset_key}


class SqlLoginFailures:
    """LoginFailureStore on one connection: its statements are part of the connection's
    transaction when it is in one (a unit of work's), and take effect with its commit."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        # One order for every reservation: PostgreSQL then takes the row locks in one
        # order, and concurrent reservations cannot deadlock.
        hashed_by_counter = {counter: _key(counter.key) for counter in counters}
        ordered = sorted(counters, key=hashed_by_counter.__getitem__)
        hashed = [hashed_by_counter[counter] for counter in ordered]
        forget = at - forget_after
        statement = _reservation(self._connection.dialect.name, _shape(ordered))
        parameters = _parameters(ordered, hashed, at, forget)
        connection = self._connection
        rows = (await connection.execute(statement, parameters)).all()
        counted = {row.key: FailureCount(row.failures, row.locked_until) for row in rows}
        if len(counted) == len(ordered):
            return Reservation(
                tuple(counters), tuple(counted[hashed_by_counter[c]] for c in counters)
            )
        if counted:
            taken = [key for key in hashed if key in counted]
            await connection.execute(GIVE_BACK, {"keys": taken, "reset": ""})
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

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        if not reservation.granted:
            return
        await self._connection.execute(GIVE_BACK, give_back_parameters(reservation, reset))

    async def forget_before(self, before: datetime) -> int:
        result = await self._connection.execute(_FORGET, {"before": before})
        return int(result.rowcount or 0)

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        hashed = [_key(key) for key in keys]
        rows = await self._connection.execute(_COUNTS, {"keys": hashed})
        found = {row.key: FailureCount(row.failures, row.locked_until) for row in rows}
        return [found.get(key, NO_FAILURES) for key in hashed]


class SqlLoginFailureStore:
    """LoginFailureStore on a database: each call one statement (or, for a reservation
    refused by a concurrent lock, a few) on a connection of its own, in effect at once."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        async with self._database.autocommit() as connection:
            return await SqlLoginFailures(connection).reserve(counters, at, forget_after)

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        if not reservation.granted:
            return
        async with self._database.autocommit() as connection:
            await SqlLoginFailures(connection).release(reservation, reset=reset)

    async def forget_before(self, before: datetime) -> int:
        async with self._database.autocommit() as connection:
            return await SqlLoginFailures(connection).forget_before(before)

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        async with self._database.autocommit() as connection:
            return await SqlLoginFailures(connection).counts(keys)
