"""Refresh-token rotation: the same four statements on both engines.

A rotation spends the token, reads its session and user if the session is live and the
user active, stores the successor and pushes the session's idle expiry. The statements
are built once, from the rules in `sessions` (`session_is_live`, `user_is_active`,
`idle_expiry_after_refresh`), each given where its session id comes from. On SQLite
they run one after another in a transaction of their own; on PostgreSQL they are the
data-modifying CTEs of one autocommitted statement, one round trip.

A token already spent is looked at again in a transaction of its own, the same on both
engines (rare: a retry or a reuse): when `RetryGrace` admits a retry, the retry is
counted on the token, the new token becomes its last successor, and the previous
successor is rotated like any token (spent only if still unspent) but with no retry of
its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Row,
    Select,
    String,
    Update,
    bindparam,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.sessions import (
    idle_expiry_after_refresh,
    session_is_live,
    user_is_active,
)
from keyhold.adapters.persistence.tables import refresh_tokens, sessions, users
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.sessions import (
    NO_RETRY_GRACE,
    RetryGrace,
    Rotation,
    RotationOutcome,
    Session,
)

_NOW = bindparam("b_now", type_=UtcDateTime())
_IDLE_UNTIL = bindparam("b_idle_until", type_=UtcDateTime())
_OLD = bindparam("b_old", type_=LargeBinary())
_NEW = bindparam("b_new", type_=LargeBinary())
_RETRY_SUCCESSOR = bindparam("b_retry_successor", type_=LargeBinary())
_SESSION = bindparam("b_session", type_=String())


def _spend() -> Update:
    """The token spent if it is there unspent; its session id."""
    return (
        update(refresh_tokens)
        .where(refresh_tokens.c.token_hash == _OLD, refresh_tokens.c.spent_at.is_(None))
        .values(spent_at=_NOW, successor_hash=_RETRY_SUCCESSOR)
        .returning(refresh_tokens.c.session_id)
    )


def _live_session(session_id: ColumnElement[str]) -> Select[Any]:
    """The session, with its user's roles, if it is live and its user active."""
    return (
        select(sessions, users.c.roles)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id == session_id, session_is_live(_NOW), user_is_active())
    )


def _add_successor(session_id: ColumnElement[str]) -> Insert:
    return insert(refresh_tokens).from_select(
        ["token_hash", "session_id", "created_at"], select(_NEW, session_id, _NOW)
    )


def _refresh(session_id: ColumnElement[str]) -> Update:
    """The session's refresh recorded; its new idle expiry."""
    return (
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(last_refresh_at=_NOW, idle_expires_at=idle_expiry_after_refresh(_IDLE_UNTIL))
        .returning(sessions.c.idle_expires_at)
    )


def _in_one_statement() -> Select[Any]:
    """The four statements as PostgreSQL's data-modifying CTEs: a row if the token was
    spent, with the session's columns (NULL unless it was live) and its new idle expiry."""
    spent = _spend().cte("spent")
    live = _live_session(spent.c.session_id).cte("live")
    successor = _add_successor(live.c.id).cte("successor")
    refreshed = _refresh(live.c.id).cte("refreshed")
    return (
        select(
            spent.c.session_id.label("spent_session"),
            live,
            refreshed.c.idle_expires_at.label("refreshed_idle_expires_at"),
        )
        .select_from(spent.outerjoin(live, true()).outerjoin(refreshed, true()))
        .add_cte(successor)
    )


# Built once: a statement reused keeps its compiled-cache key.
_SPEND = _spend()
_LIVE_SESSION = _live_session(_SESSION)
_ADD_SUCCESSOR = _add_successor(_SESSION)
_REFRESH = _refresh(_SESSION)
_ROTATE_IN_ONE_STATEMENT = _in_one_statement()
_SPENT_ROW = (
    select(
        refresh_tokens.c.session_id,
        refresh_tokens.c.spent_at,
        refresh_tokens.c.successor_hash,
        refresh_tokens.c.grace_retries,
    )
    .where(refresh_tokens.c.token_hash == _OLD)
    .with_for_update()  # concurrent retries of a token take turns (SQLite: the write lock)
)
_RETRIED = (
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == _OLD)
    .values(successor_hash=_NEW, grace_retries=refresh_tokens.c.grace_retries + 1)
)


def _rotated(row: Row[Any], idle_expires_at: datetime, now: datetime) -> Rotation:
    session = Session(
        id=row.id,
        user_id=row.user_id,
        user_agent=row.user_agent,
        peer=row.peer,
        created_at=row.created_at,
        expires_at=row.expires_at,
        idle_expires_at=idle_expires_at,
        last_refresh_at=now,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )
    return Rotation(RotationOutcome.ROTATED, row.id, session, frozenset(json.loads(row.roles)))


class _RotateOnce(Protocol):
    async def __call__(
        self, connection: AsyncConnection, params: dict[str, Any], now: datetime
    ) -> Rotation | None: ...


async def _statement_by_statement(
    connection: AsyncConnection, params: dict[str, Any], now: datetime
) -> Rotation | None:
    """The rotation, inside the caller's transaction; None if the token is not there
    unspent."""
    session_id = await connection.scalar(_SPEND, params)
    if session_id is None:
        return None
    params = {**params, "b_session": session_id}
    row = (await connection.execute(_LIVE_SESSION, params)).first()
    if row is None:
        return Rotation(RotationOutcome.ENDED, session_id)  # the spend stands
    await connection.execute(_ADD_SUCCESSOR, params)
    idle_expires_at = await connection.scalar(_REFRESH, params)
    return _rotated(row, idle_expires_at, now)


async def _in_one_round_trip(
    connection: AsyncConnection, params: dict[str, Any], now: datetime
) -> Rotation | None:
    """The rotation as one statement; None if the token is not there unspent."""
    row = (await connection.execute(_ROTATE_IN_ONE_STATEMENT, params)).first()
    if row is None:
        return None
    if row.id is None:
        return Rotation(RotationOutcome.ENDED, row.spent_session)
    return _rotated(row, row.refreshed_idle_expires_at, now)


class SqlRefreshTokenRotator:
    def __init__(self, database: Database, grace: RetryGrace = NO_RETRY_GRACE) -> None:
        self._database = database
        self._grace = grace
        # One statement needs no transaction around it; several do.
        self._rotate_once: _RotateOnce
        self._first_attempt: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
        if database.is_postgres:
            self._rotate_once, self._first_attempt = _in_one_round_trip, database.autocommit
        else:
            self._rotate_once, self._first_attempt = _statement_by_statement, database.transaction

    async def rotate(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        params = _params(old_hash, new_hash, new_hash, now, idle_until)
        async with self._first_attempt() as connection:
            rotation = await self._rotate_once(connection, params, now)
        if rotation is not None:
            return rotation
        async with self._database.transaction() as connection:
            return await self._retry_or_reuse(connection, old_hash, new_hash, now, idle_until)

    async def _retry_or_reuse(
        self,
        connection: AsyncConnection,
        old_hash: bytes,
        new_hash: bytes,
        now: datetime,
        idle_until: datetime,
    ) -> Rotation:
        """The token was spent before: a retry the grace admits, or reuse."""
        token = (await connection.execute(_SPENT_ROW, {"b_old": old_hash})).first()
        if token is None:
            return Rotation(RotationOutcome.UNKNOWN)
        session_id, spent_at, successor, retried = token
        if not self._grace.admits(spent_at, successor is not None, retried, now):
            return Rotation(RotationOutcome.REUSED, session_id)
        await connection.execute(_RETRIED, {"b_old": old_hash, "b_new": new_hash})
        params = _params(successor, new_hash, None, now, idle_until)
        rotation = await self._rotate_once(connection, params, now)
        if rotation is None:  # the successor was presented meanwhile: no retry any more
            return Rotation(RotationOutcome.REUSED, session_id)
        if rotation.outcome is RotationOutcome.ROTATED:
            return dataclasses.replace(rotation, outcome=RotationOutcome.RETRIED)
        return rotation


def _params(
    old_hash: bytes,
    new_hash: bytes,
    retry_successor: bytes | None,
    now: datetime,
    idle_until: datetime,
) -> dict[str, Any]:
    """`retry_successor`: what the spent token records as its successor (None for a
    token spent by a retry, which gets no retry of its own)."""
    return {
        "b_old": old_hash,
        "b_new": new_hash,
        "b_retry_successor": retry_successor,
        "b_now": now,
        "b_idle_until": idle_until,
    }
