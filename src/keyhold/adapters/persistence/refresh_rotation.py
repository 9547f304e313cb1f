"""Refresh-token rotation: one atomic statement on PostgreSQL, one trip on SQLite.

On PostgreSQL the spend, the liveness check, the successor's insert and the session's
idle-expiry update are data-modifying CTEs of a single autocommitted statement: one
round trip instead of BEGIN, five statements and COMMIT. On SQLite the same steps are
one transaction run on the connection's thread in one call
(`Database.one_trip_transaction`): through SQLAlchemy each statement was a hand-off to
that thread and back, and the seven of them cost about two thirds of the event loop's
CPU per refresh.

A token already spent is looked at again in a transaction of its own (rare: a retry or
a reuse): when `RetryGrace` admits a retry, the retry is counted on the token, the new
token becomes its last successor, and the previous successor is rotated like any token
(spent only if still unspent) but with no retry of its own. Both engines take the same
steps in the same order.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import LargeBinary, bindparam, text

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.sessions import (
    NO_RETRY_GRACE,
    RetryGrace,
    Rotation,
    RotationOutcome,
    Session,
)
from keyhold.domain.identity.users import UserState

_POSTGRES_ROTATION = text(
    """
    WITH spent AS (
        UPDATE refresh_tokens SET spent_at = :now, successor_hash = :retry_successor
        WHERE token_hash = :old AND spent_at IS NULL
        RETURNING session_id
    ), live AS (
        SELECT s.id, s.user_id, s.user_agent, s.peer, s.created_at, s.expires_at, u.roles
        FROM spent
        JOIN sessions s ON s.id = spent.session_id
        JOIN users u ON u.id = s.user_id
        WHERE s.revoked_at IS NULL AND s.expires_at > :now AND s.idle_expires_at > :now
          AND u.state = 'active'
    ), successor AS (
        INSERT INTO refresh_tokens (token_hash, session_id, created_at)
        SELECT :new, id, :now FROM live
    ), touched AS (
        UPDATE sessions
        SET last_refresh_at = :now, idle_expires_at = LEAST(:idle_until, sessions.expires_at)
        FROM live WHERE sessions.id = live.id
        RETURNING sessions.idle_expires_at
    )
    SELECT spent.session_id AS spent_session, live.*, touched.idle_expires_at
    FROM spent LEFT JOIN live ON true LEFT JOIN touched ON true
    """
).bindparams(
    bindparam("now", type_=UtcDateTime()),
    bindparam("idle_until", type_=UtcDateTime()),
    bindparam("retry_successor", type_=LargeBinary()),
)
_POSTGRES_SPENT_ROW = text(
    "SELECT session_id, spent_at, successor_hash, grace_retries FROM refresh_tokens"
    " WHERE token_hash = :old FOR UPDATE"
).columns(spent_at=UtcDateTime())
_POSTGRES_RETRIED = text(
    "UPDATE refresh_tokens SET successor_hash = :new, grace_retries = grace_retries + 1"
    " WHERE token_hash = :old"
)


_SQLITE_SPEND = (
    "UPDATE refresh_tokens SET spent_at = ?, successor_hash = ?"
    " WHERE token_hash = ? AND spent_at IS NULL RETURNING session_id"
)
_SQLITE_SPENT_ROW = (
    "SELECT session_id, spent_at, successor_hash, grace_retries FROM refresh_tokens"
    " WHERE token_hash = ?"
)
_SQLITE_RETRIED = (
    "UPDATE refresh_tokens SET successor_hash = ?, grace_retries = grace_retries + 1"
    " WHERE token_hash = ?"
)
_SQLITE_SESSION_AND_USER = (
    "SELECT s.user_id, s.user_agent, s.peer, s.created_at, s.expires_at, s.idle_expires_at,"
    " s.revoked_at, s.revoke_reason, u.state, u.roles"
    " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?"
)
_SQLITE_SUCCESSOR = (
    "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?, ?, ?)"
)
_SQLITE_TOUCH = "UPDATE sessions SET last_refresh_at = ?, idle_expires_at = ? WHERE id = ?"


class _SqliteTimes:
    """UtcDateTime's own conversions on SQLite, for statements written against sqlite3."""

    def __init__(self, dialect: Any) -> None:
        column_type = UtcDateTime().dialect_impl(dialect)
        stored, loaded = (
            column_type.bind_processor(dialect),
            column_type.result_processor(dialect, None),
        )
        if stored is None or loaded is None:
            raise TypeError(f"{dialect.name} does not convert datetimes")
        self.stored: Callable[[datetime], str] = stored
        self._loaded: Callable[[Any], Any] = loaded

    def loaded(self, value: str) -> datetime:
        moment: datetime = self._loaded(value)
        return moment

    def loaded_or_none(self, value: str | None) -> datetime | None:
        return None if value is None else self.loaded(value)


class SqlRefreshTokenRotator:
    def __init__(self, database: Database, grace: RetryGrace = NO_RETRY_GRACE) -> None:
        self._database = database
        self._grace = grace
        self._times = None if database.is_postgres else _SqliteTimes(database.engine.dialect)

    async def rotate(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        if self._database.is_postgres:
            return await self._rotate_in_one_statement(old_hash, new_hash, now, idle_until)
        return await self._rotate_in_one_trip(old_hash, new_hash, now, idle_until)

    async def _rotate_in_one_statement(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        async with self._database.autocommit() as connection:
            rotation = await self._rotate_on_postgres(
                connection, old_hash, new_hash, new_hash, now, idle_until
            )
        if rotation is not None:
            return rotation
        async with self._database.transaction() as connection:
            return await self._retry_or_reuse_on_postgres(
                connection, old_hash, new_hash, now, idle_until
            )

    async def _retry_or_reuse_on_postgres(
        self, connection: Any, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        """The token was spent before: a retry the grace admits, or reuse. The token's
        row is locked first, so that concurrent retries of it take turns."""
        token = (await connection.execute(_POSTGRES_SPENT_ROW, {"old": old_hash})).first()
        if token is None:
            return Rotation(RotationOutcome.UNKNOWN)
        session_id, spent_at, successor, retried = token
        if not self._grace.admits(spent_at, successor is not None, retried, now):
            return Rotation(RotationOutcome.REUSED, session_id)
        await connection.execute(_POSTGRES_RETRIED, {"old": old_hash, "new": new_hash})
        rotation = await self._rotate_on_postgres(
            connection, successor, new_hash, None, now, idle_until
        )
        if rotation is None:  # the successor was presented meanwhile: no retry any more
            return Rotation(RotationOutcome.REUSED, session_id)
        if rotation.outcome is RotationOutcome.ROTATED:
            return dataclasses.replace(rotation, outcome=RotationOutcome.RETRIED)
        return rotation

    @staticmethod
    async def _rotate_on_postgres(
        connection: Any,
        old_hash: bytes,
        new_hash: bytes,
        retry_successor: bytes | None,
        now: datetime,
        idle_until: datetime,
    ) -> Rotation | None:
        """The rotation statement; None if the token is not there unspent."""
        params = {
            "old": old_hash,
            "new": new_hash,
            "retry_successor": retry_successor,
            "now": now,
            "idle_until": idle_until,
        }
        row = (await connection.execute(_POSTGRES_ROTATION, params)).first()
        if row is None:
            return None
        if row.id is None:
            return Rotation(RotationOutcome.ENDED, row.spent_session)
        session = Session(
            id=row.id,
            user_id=row.user_id,
            user_agent=row.user_agent,
            peer=row.peer,
            created_at=row.created_at,
            expires_at=row.expires_at,
            idle_expires_at=row.idle_expires_at,
            last_refresh_at=now,
        )
        return Rotation(RotationOutcome.ROTATED, row.id, session, frozenset(json.loads(row.roles)))

    async def _rotate_in_one_trip(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        work = partial(self._rotate_on_connection, old_hash, new_hash, now, idle_until)
        return await self._database.one_trip_transaction(work)

    def _rotate_on_connection(
        self,
        old_hash: bytes,
        new_hash: bytes,
        now: datetime,
        idle_until: datetime,
        connection: sqlite3.Connection,
    ) -> Rotation:
        """The rotation on SQLite's thread, inside BEGIN IMMEDIATE … COMMIT."""
        rotation = self._rotate_on_sqlite(connection, old_hash, new_hash, new_hash, now, idle_until)
        if rotation is not None:
            return rotation
        return self._retry_or_reuse_on_sqlite(connection, old_hash, new_hash, now, idle_until)

    def _retry_or_reuse_on_sqlite(
        self,
        connection: sqlite3.Connection,
        old_hash: bytes,
        new_hash: bytes,
        now: datetime,
        idle_until: datetime,
    ) -> Rotation:
        """The token was spent before: a retry the grace admits, or reuse (the
        transaction's write lock makes concurrent retries take turns)."""
        times = self._sqlite_times()
        token = connection.execute(_SQLITE_SPENT_ROW, (old_hash,)).fetchone()
        if token is None:
            return Rotation(RotationOutcome.UNKNOWN)
        session_id, spent_at, successor, retried = token
        if not self._grace.admits(times.loaded(spent_at), successor is not None, retried, now):
            return Rotation(RotationOutcome.REUSED, session_id)
        connection.execute(_SQLITE_RETRIED, (new_hash, old_hash))
        rotation = self._rotate_on_sqlite(connection, successor, new_hash, None, now, idle_until)
        if rotation is None:  # the successor was presented before: no retry any more
            return Rotation(RotationOutcome.REUSED, session_id)
        if rotation.outcome is RotationOutcome.ROTATED:
            return dataclasses.replace(rotation, outcome=RotationOutcome.RETRIED)
        return rotation

    def _rotate_on_sqlite(
        self,
        connection: sqlite3.Connection,
        old_hash: bytes,
        new_hash: bytes,
        retry_successor: bytes | None,
        now: datetime,
        idle_until: datetime,
    ) -> Rotation | None:
        """The rotation's statements; None if the token is not there unspent."""
        times = self._sqlite_times()
        at = times.stored(now)
        spent = connection.execute(_SQLITE_SPEND, (at, retry_successor, old_hash)).fetchone()
        if spent is None:
            return None
        session_id: str = spent[0]
        row = connection.execute(_SQLITE_SESSION_AND_USER, (session_id,)).fetchone()
        if row is None:
            return Rotation(RotationOutcome.ENDED, session_id)
        user_id, agent, peer, created, expires, idle, revoked, reason, state, roles = row
        session = Session(
            id=session_id,
            user_id=user_id,
            user_agent=agent,
            peer=peer,
            created_at=times.loaded(created),
            expires_at=times.loaded(expires),
            idle_expires_at=times.loaded(idle),
            last_refresh_at=now,
            revoked_at=times.loaded_or_none(revoked),
            revoke_reason=reason,
        )
        if UserState(state) is not UserState.ACTIVE or not session.is_live(now):
            return Rotation(RotationOutcome.ENDED, session_id)  # the spend stands
        connection.execute(_SQLITE_SUCCESSOR, (new_hash, session_id, at))
        refreshed = dataclasses.replace(
            session, idle_expires_at=min(idle_until, session.expires_at)
        )
        connection.execute(_SQLITE_TOUCH, (at, times.stored(refreshed.idle_expires_at), session_id))
        return Rotation(
            RotationOutcome.ROTATED, session_id, refreshed, frozenset(json.loads(roles))
        )

    def _sqlite_times(self) -> _SqliteTimes:
        times = self._times
        assert times is not None, "SQLite's rotation on another database"
        return times
