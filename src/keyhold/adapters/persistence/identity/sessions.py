"""SessionRepository on SQL, and the SQL statement of the rules a session is used by:
live (`session_is_live`), its user active (`user_is_active`), and how a refresh moves
its idle expiry (`idle_expiry_after_refresh`). Each is the SQL twin of a domain method,
and every statement that applies a rule builds it from here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Row,
    and_,
    bindparam,
    case,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from keyhold.adapters.persistence.identity.login_failures import (
    GIVE_BACK,
    SqlLoginFailures,
    give_back_parameters,
)
from keyhold.adapters.persistence.tables import refresh_tokens, sessions, users
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.lockout import GiveBack
from keyhold.domain.identity.sessions import Session
from keyhold.domain.identity.users import UserState

When = datetime | ColumnElement[datetime]


def session_is_live(now: When) -> ColumnElement[bool]:
    """`Session.is_live` in SQL, on the `sessions` table: not revoked, and before both
    its absolute and its idle expiry."""
    return and_(
        sessions.c.revoked_at.is_(None),
        sessions.c.expires_at > now,
        sessions.c.idle_expires_at > now,
    )


def user_is_active() -> ColumnElement[bool]:
    """`User.is_active` in SQL, on the `users` table."""
    return users.c.state == UserState.ACTIVE.value


def idle_expiry_after_refresh(idle_until: When) -> ColumnElement[datetime]:
    """`Session.refreshed`'s idle expiry in SQL: `idle_until`, never past the session's
    absolute end."""
    return case((sessions.c.expires_at < idle_until, sessions.c.expires_at), else_=idle_until)


_GET = select(sessions).where(sessions.c.id == bindparam("b_id"))
_ADD = sessions.insert()
_ADD_REFRESH_TOKEN = refresh_tokens.insert()


def _added_with_first_token() -> Insert:
    """PostgreSQL: the session and its first refresh token in one statement."""
    added = (
        sessions.insert()
        .values({column.name: bindparam(column.name, type_=column.type) for column in sessions.c})
        .returning(sessions.c.id)
        .cte("added")
    )
    first_token = select(
        bindparam("token_hash", type_=LargeBinary()),
        added.c.id,
        bindparam("token_created_at", type_=UtcDateTime()),
    )
    return (
        refresh_tokens.insert()
        .from_select(["token_hash", "session_id", "created_at"], first_token)
        .add_cte(added)
    )


_ADD_WITH_FIRST_TOKEN = _added_with_first_token()
# PostgreSQL: the same, and the login's reservation given back, in one statement.
_START = _added_with_first_token().add_cte(GIVE_BACK.cte("given_back"))


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        user_agent=row.user_agent,
        peer=row.peer,
        created_at=row.created_at,
        expires_at=row.expires_at,
        idle_expires_at=row.idle_expires_at,
        last_refresh_at=row.last_refresh_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


def _row(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "user_id": session.user_id,
        "user_agent": session.user_agent,
        "peer": session.peer,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "idle_expires_at": session.idle_expires_at,
        "last_refresh_at": session.last_refresh_at,
        "revoked_at": session.revoked_at,
        "revoke_reason": session.revoke_reason,
    }


class SqlSessionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def start(self, session: Session, refresh_token_hash: bytes, give_back: GiveBack) -> None:
        reservation = give_back.reservation
        if not reservation.granted:
            await self.add(session, refresh_token_hash)
            return
        if self._connection.dialect.name == "postgresql":
            await self._connection.execute(
                _START,
                {
                    **_row(session),
                    "token_hash": refresh_token_hash,
                    "token_created_at": session.created_at,
                    **give_back_parameters(reservation, give_back.reset),
                },
            )
            return
        # A savepoint: in a transaction, part of it; outside one, SQLite's own
        # transaction, committed when it is released.
        async with self._connection.begin_nested():
            await self.add(session, refresh_token_hash)
            await SqlLoginFailures(self._connection).release(reservation, reset=give_back.reset)

    async def add(self, session: Session, refresh_token_hash: bytes) -> None:
        row = _row(session)
        if self._connection.dialect.name == "postgresql":
            await self._connection.execute(
                _ADD_WITH_FIRST_TOKEN,
                {**row, "token_hash": refresh_token_hash, "token_created_at": session.created_at},
            )
            return
        await self._connection.execute(_ADD, row)
        await self._connection.execute(
            _ADD_REFRESH_TOKEN,
            {
                "token_hash": refresh_token_hash,
                "session_id": session.id,
                "created_at": session.created_at,
            },
        )

    async def get(self, session_id: str) -> Session | None:
        row = (await self._connection.execute(_GET, {"b_id": session_id})).first()
        return _session(row) if row else None

    async def live_for_user(
        self, user_id: str, now: datetime, before: tuple[str, str] | None, limit: int
    ) -> list[Session]:
        c = sessions.c
        query = (
            select(sessions)
            .where(c.user_id == user_id, session_is_live(now))
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        if before is not None:
            created = datetime.fromisoformat(before[0])
            query = query.where(
                or_(c.created_at < created, and_(c.created_at == created, c.id < before[1]))
            )
        return [_session(row) for row in await self._connection.execute(query)]

    async def revoke(self, session_id: str, at: datetime, reason: str) -> bool:
        result = await self._connection.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=at, revoke_reason=reason)
        )
        return bool(result.rowcount)

    async def revoke_for_user(
        self, user_id: str, at: datetime, reason: str, except_session: str | None = None
    ) -> list[str]:
        query = (
            update(sessions)
            .where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=at, revoke_reason=reason)
            .returning(sessions.c.id)
        )
        if except_session is not None:
            query = query.where(sessions.c.id != except_session)
        return [row.id for row in await self._connection.execute(query)]

    async def refresh_token_session(self, token_hash: bytes) -> str | None:
        session_id: str | None = await self._connection.scalar(
            select(refresh_tokens.c.session_id).where(refresh_tokens.c.token_hash == token_hash)
        )
        return session_id
