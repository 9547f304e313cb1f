"""UserRepository in memory."""

from __future__ import annotations

from datetime import datetime

from keyhold.domain.identity.users import EmailTaken, User
from tests.support.fakes.store import IntegrityViolation, Transaction, after_cursor


def _created(user: User) -> tuple[datetime, str]:
    return user.created_at, user.id


class InMemoryUserRepository:
    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def add(self, user: User) -> None:
        # As on SQL: any unique violation of the insert is reported as the email's.
        if user.id in self._tx.users or await self.by_email(user.email) is not None:
            raise EmailTaken(user.email)
        self._tx.users.put(user.id, user)

    async def get(self, user_id: str) -> User | None:
        return self._tx.users.get(user_id)

    async def by_email(self, email: str) -> User | None:
        return next((user for user in self._tx.users.values() if user.email == email), None)

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[User]:
        return after_cursor(list(self._tx.users.values()), _created, after)[:limit]

    async def update(self, user: User) -> None:
        current = self._tx.users.get(user.id)
        if current is None:
            return  # an UPDATE that matches no row
        owner = await self.by_email(user.email)
        if owner is not None and owner.id != user.id:
            raise IntegrityViolation(f"email of {user.name} taken by {owner.name}")
        self._tx.users.put(user.id, user.with_changes(created_at=current.created_at))

    async def delete(self, user_id: str) -> bool:
        if not self._tx.users.delete(user_id):
            return False
        # ON DELETE CASCADE: the user's sessions (and their refresh tokens), one-time
        # tokens and connections go with it.
        ended = {
            session_id for session_id, _ in self._tx.sessions.where(lambda s: s.user_id == user_id)
        }
        for session_id in ended:
            self._tx.sessions.delete(session_id)
        for token, _ in self._tx.refresh_tokens.where(lambda t: t.session_id in ended):
            self._tx.refresh_tokens.delete(token)
        for token, _ in self._tx.one_time_tokens.where(lambda t: t.user_id == user_id):
            self._tx.one_time_tokens.delete(token)
        for connection_id, _ in self._tx.connections.where(
            lambda row: row.connection.user_id == user_id
        ):
            self._tx.connections.delete(connection_id)
        return True
