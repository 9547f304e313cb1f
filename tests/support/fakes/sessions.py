"""Sessions in memory: the repository, the refresh-token rotator and the session-state
lookup, over one store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from keyhold.domain.identity.lockout import GiveBack, LoginFailureStore
from keyhold.domain.identity.sessions import (
    NO_RETRY_GRACE,
    RetryGrace,
    Rotation,
    RotationOutcome,
    Session,
)
from tests.support.fakes.store import (
    InMemoryStore,
    IntegrityViolation,
    RefreshTokenRow,
    Transaction,
    before_cursor,
)


def _created(session: Session) -> tuple[datetime, str]:
    return session.created_at, session.id


class InMemorySessionRepository:
    def __init__(self, transaction: Transaction, login_failures: LoginFailureStore) -> None:
        self._tx = transaction
        self._login_failures = login_failures

    async def start(self, session: Session, refresh_token_hash: bytes, give_back: GiveBack) -> None:
        """The session, then the give-back (the store's counts are written at once): a
        session that cannot be added gives nothing back."""
        await self.add(session, refresh_token_hash)
        await self._login_failures.release(give_back.reservation, reset=give_back.reset)

    async def add(self, session: Session, refresh_token_hash: bytes) -> None:
        if session.user_id not in self._tx.users:
            raise IntegrityViolation(f"no user {session.user_id!r} for {session.name}")
        self._tx.sessions.insert(session.id, session)
        self._tx.refresh_tokens.insert(
            refresh_token_hash, RefreshTokenRow(session.id, session.created_at)
        )

    async def get(self, session_id: str) -> Session | None:
        return self._tx.sessions.get(session_id)

    async def live_for_user(
        self, user_id: str, now: datetime, before: tuple[str, str] | None, limit: int
    ) -> list[Session]:
        live = [
            session
            for session in self._tx.sessions.values()
            if session.user_id == user_id and session.is_live(now)
        ]
        return before_cursor(live, _created, before)[:limit]

    async def revoke(self, session_id: str, at: datetime, reason: str) -> bool:
        session = self._tx.sessions.get(session_id)
        if session is None or session.revoked_at is not None:
            return False
        self._tx.sessions.put(session_id, replace(session, revoked_at=at, revoke_reason=reason))
        return True

    async def revoke_for_user(
        self, user_id: str, at: datetime, reason: str, except_session: str | None = None
    ) -> list[str]:
        revoked = [
            session.id
            for session in self._tx.sessions.values()
            if session.user_id == user_id
            and session.revoked_at is None
            and session.id != except_session
        ]
        for session_id in revoked:
            await self.revoke(session_id, at, reason)
        return revoked

    async def refresh_token_session(self, token_hash: bytes) -> str | None:
        row = self._tx.refresh_tokens.get(token_hash)
        return row.session_id if row else None


class InMemoryRefreshTokenRotator:
    """The SQL rotator's steps, in the same order, as one transaction on the store.
    Nothing in it awaits, so concurrent rotations take turns as they do on SQL."""

    def __init__(self, store: InMemoryStore, grace: RetryGrace = NO_RETRY_GRACE) -> None:
        self._store = store
        self._grace = grace

    async def rotate(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        tx = self._store.begin()
        rotation = self._rotate(tx, old_hash, new_hash, new_hash, now, idle_until)
        if rotation is None:
            rotation = self._retry_or_reuse(tx, old_hash, new_hash, now, idle_until)
        self._store.commit(tx)
        return rotation

    def _retry_or_reuse(
        self, tx: Transaction, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        token = tx.refresh_tokens.get(old_hash)
        if token is None:
            return Rotation(RotationOutcome.UNKNOWN)
        successor, spent_at = token.successor_hash, token.spent_at
        assert spent_at is not None, "_rotate passes over only a spent token"
        admitted = self._grace.admits(spent_at, successor is not None, token.grace_retries, now)
        if not admitted or successor is None:
            return Rotation(RotationOutcome.REUSED, token.session_id)
        tx.refresh_tokens.put(
            old_hash,
            replace(token, successor_hash=new_hash, grace_retries=token.grace_retries + 1),
        )
        rotation = self._rotate(tx, successor, new_hash, None, now, idle_until)
        if rotation is None:  # the successor was presented before: no retry any more
            return Rotation(RotationOutcome.REUSED, token.session_id)
        if rotation.outcome is RotationOutcome.ROTATED:
            return replace(rotation, outcome=RotationOutcome.RETRIED)
        return rotation

    @staticmethod
    def _rotate(
        tx: Transaction,
        old_hash: bytes,
        new_hash: bytes,
        retry_successor: bytes | None,
        now: datetime,
        idle_until: datetime,
    ) -> Rotation | None:
        """None if the token is not there unspent."""
        token = tx.refresh_tokens.get(old_hash)
        if token is None or token.spent_at is not None:
            return None
        tx.refresh_tokens.put(
            old_hash, replace(token, spent_at=now, successor_hash=retry_successor)
        )
        session = tx.sessions.get(token.session_id)
        user = tx.users.get(session.user_id) if session else None
        if session is None or user is None or not user.is_active or not session.is_live(now):
            return Rotation(RotationOutcome.ENDED, token.session_id)  # the spend stands
        tx.refresh_tokens.insert(new_hash, RefreshTokenRow(session.id, now))
        refreshed = session.refreshed(now, idle_until)
        tx.sessions.put(session.id, refreshed)
        return Rotation(RotationOutcome.ROTATED, session.id, refreshed, user.roles)


class InMemorySessionState:
    """Whether a session may still be used: live, and its user active (committed rows)."""

    def __init__(self, store: InMemoryStore, now: Callable[[], datetime]) -> None:
        self._store = store
        self._now = now

    async def is_live(self, session_id: str, user_id: str) -> bool:
        tx = self._store.begin()
        session = tx.sessions.get(session_id)
        user = tx.users.get(user_id)
        return (
            session is not None
            and user is not None
            and session.user_id == user_id
            and user.is_active
            and session.is_live(self._now())
        )
