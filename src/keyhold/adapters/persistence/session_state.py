"""The session-state lookup behind access-token revocation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, select

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import sessions, users

# Built once: a statement reused keeps its compiled-cache key (SQLAlchemy memoizes it on
# the object), where one built per call is walked again to compute it every time.
_SESSION_STATE = (
    select(sessions.c.revoked_at, sessions.c.expires_at, sessions.c.idle_expires_at)
    .join(users, users.c.id == sessions.c.user_id)
    .where(
        sessions.c.id == bindparam("session_id"),
        sessions.c.user_id == bindparam("user_id"),
        users.c.state == "active",
    )
)


class SqlSessionState:
    """Whether a session may still be used: live, and its user active."""

    def __init__(self, database: Database, now: Callable[[], datetime]) -> None:
        self._database = database
        self._now = now

    async def is_live(self, session_id: str, user_id: str) -> bool:
        params = {"session_id": session_id, "user_id": user_id}
        async with self._database.autocommit() as connection:
            row = (await connection.execute(_SESSION_STATE, params)).first()
        now = self._now()
        return (
            row is not None
            and row.revoked_at is None
            and now < row.expires_at
            and now < row.idle_expires_at
        )
