"""Refresh-token rotation: one atomic statement on PostgreSQL, one transaction on SQLite.

On PostgreSQL the spend, the liveness check, the successor's insert and the session's
idle-expiry update are data-modifying CTEs of a single autocommitted statement: one
round trip instead of BEGIN, five statements and COMMIT.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import refresh_tokens
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWork
from keyhold.domain.identity.sessions import Rotation, RotationOutcome, Session

_POSTGRES_ROTATION = text(
    """
    WITH spent AS (
        UPDATE refresh_tokens SET spent_at = :now
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
)


class SqlRefreshTokenRotator:
    def __init__(self, database: Database, unit_of_work: Callable[[], SqlUnitOfWork]) -> None:
        self._database = database
        self._unit_of_work = unit_of_work

    async def rotate(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        if self._database.is_postgres:
            return await self._rotate_in_one_statement(old_hash, new_hash, now, idle_until)
        return await self._rotate_in_a_transaction(old_hash, new_hash, now, idle_until)

    async def _rotate_in_one_statement(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        params = {"old": old_hash, "new": new_hash, "now": now, "idle_until": idle_until}
        async with self._database.autocommit() as connection:
            row = (await connection.execute(_POSTGRES_ROTATION, params)).first()
            if row is None:
                return await self._why_not_spent(connection, old_hash)
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

    async def _rotate_in_a_transaction(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        async with self._unit_of_work() as uow:
            session_id = await uow.sessions.spend_refresh_token(old_hash, now)
            if session_id is None:
                return await self._why_not_spent(uow.connection, old_hash)
            session = await uow.sessions.get(session_id)
            user = await uow.users.get(session.user_id) if session else None
            if session is None or user is None or not user.is_active or not session.is_live(now):
                return Rotation(RotationOutcome.ENDED, session_id)
            await uow.sessions.add_refresh_token(new_hash, session_id, now)
            idle = min(idle_until, session.expires_at)
            await uow.sessions.touch(session_id, now, idle)
        refreshed = dataclasses.replace(session, idle_expires_at=idle, last_refresh_at=now)
        return Rotation(RotationOutcome.ROTATED, session_id, refreshed, user.roles)

    @staticmethod
    async def _why_not_spent(connection: Any, old_hash: bytes) -> Rotation:
        session_id = await connection.scalar(
            select(refresh_tokens.c.session_id).where(refresh_tokens.c.token_hash == old_hash)
        )
        if session_id is None:
            return Rotation(RotationOutcome.UNKNOWN)
        return Rotation(RotationOutcome.REUSED, session_id)
