"""The session-state lookup behind access-token revocation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, select

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.sessions import session_is_live, user_is_active
from keyhold.adapters.persistence.tables import sessions, users
from keyhold.adapters.persistence.types import UtcDateTime

# Built once: a statement reused keeps its compiled-cache key (SQLAlchemy memoizes it on
# the object), where one built per call is walked again to compute it every time.
_LIVE_SESSION = (
    select(sessions.c.id)
    .join(users, users.c.id == sessions.c.user_id)
    .where(
        sessions.c.id == bindparam("b_session"),
        sessions.c.user_id == bindparam("b_user"),
        session_is_live(bindparam("b_now", type_=UtcDateTime())),
        user_is_active(),
    )
)


class SqlSessionState:
    """Whether a session may still be used: live, and its user active."""

    def __init__(self, database: Database, now: Callable[[], datetime]) -> None:
        self._database = database
        self._now = now

    async def is_live(self, session_id: str, user_id: str) -> bool:
        params = {"b_session": session_id, "b_user": user_id, "b_now": self._now()}
        async with self._database.autocommit() as connection:
            row = (await connection.execute(_LIVE_SESSION, params)).first()
        return row is not None
