"""SessionRepository on SQL, and the session-state lookup behind token revocation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import refresh_tokens, sessions
from keyhold.domain.identity.sessions import Session

# The statements of a refresh on SQLite, built once: building one costs more of the
# event loop than running it (bound parameters are named apart from the columns).
_GET = select(sessions).where(sessions.c.id == bindparam("b_id"))
_TOUCH = (
    update(sessions)
    .where(sessions.c.id == bindparam("b_id"))
    .values(
        last_refresh_at=bindparam("b_at", type_=sessions.c.last_refresh_at.type),
        idle_expires_at=bindparam("b_idle", type_=sessions.c.idle_expires_at.type),
    )
)
_ADD_REFRESH_TOKEN = refresh_tokens.insert()
_SPEND_REFRESH_TOKEN = (
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == bindparam("b_hash"), refresh_tokens.c.spent_at.is_(None))
    .values(spent_at=bindparam("b_at", type_=refresh_tokens.c.spent_at.type))
    .returning(refresh_tokens.c.session_id)
)


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


class SqlSessionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, session: Session) -> None:
        await self._connection.execute(
            sessions.insert().values(
                id=session.id,
                user_id=session.user_id,
                user_agent=session.user_agent,
                peer=session.peer,
                created_at=session.created_at,
                expires_at=session.expires_at,
                idle_expires_at=session.idle_expires_at,
                last_refresh_at=session.last_refresh_at,
                revoked_at=session.revoked_at,
                revoke_reason=session.revoke_reason,
            )
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
            .where(
                c.user_id == user_id,
                c.revoked_at.is_(None),
                c.expires_at > now,
                c.idle_expires_at > now,
            )
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        if before is not None:
            created = datetime.fromisoformat(before[0])
            query = query.where(
                or_(c.created_at < created, and_(c.created_at == created, c.id < before[1]))
            )
        return [_session(row) for row in await self._connection.execute(query)]

    async def touch(self, session_id: str, at: datetime, idle_expires_at: datetime) -> None:
        await self._connection.execute(
            _TOUCH, {"b_id": session_id, "b_at": at, "b_idle": idle_expires_at}
        )

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

    async def add_refresh_token(self, token_hash: bytes, session_id: str, at: datetime) -> None:
        await self._connection.execute(
            _ADD_REFRESH_TOKEN,
            {"token_hash": token_hash, "session_id": session_id, "created_at": at},
        )

    async def spend_refresh_token(self, token_hash: bytes, at: datetime) -> str | None:
        result = await self._connection.execute(
            _SPEND_REFRESH_TOKEN, {"b_hash": token_hash, "b_at": at}
        )
        row = result.first()
        return row.session_id if row else None

    async def refresh_token_session(self, token_hash: bytes) -> str | None:
        session_id: str | None = await self._connection.scalar(
            select(refresh_tokens.c.session_id).where(refresh_tokens.c.token_hash == token_hash)
        )
        return session_id
