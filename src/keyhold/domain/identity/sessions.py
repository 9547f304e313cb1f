"""Sessions and their refresh tokens (one family per session)."""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.lockout import GiveBack

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    user_agent: str
    peer: str
    created_at: datetime
    expires_at: datetime  # absolute end, whatever the refreshes
    idle_expires_at: datetime  # pushed forward by each refresh
    last_refresh_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str = ""

    @property
    def name(self) -> str:
        return f"sessions/{self.id}"

    def is_live(self, now: datetime) -> bool:
        """Not revoked, and before both its absolute and its idle expiry. The database
        applies the same rule in its statements (`session_is_live` in the persistence
        adapter); a change to the rule is made in both, and a test checks they agree."""
        return self.revoked_at is None and now < self.expires_at and now < self.idle_expires_at

    def refreshed(self, now: datetime, idle_until: datetime) -> Session:
        """The session refreshed at `now`: its idle expiry pushed to `idle_until`, never
        past its absolute end (in SQL: `idle_expiry_after_refresh`)."""
        return dataclasses.replace(
            self, last_refresh_at=now, idle_expires_at=min(idle_until, self.expires_at)
        )


def session_id_from_name(name: str, current_session: str | None, field: str = "name") -> str:
    if name == "sessions/current" and current_session:
        return current_session
    collection, _, session_id = name.partition("/")
    if collection != "sessions" or not SESSION_ID.match(session_id) or session_id == "current":
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be sessions/{{id}} or sessions/current",
            [FieldViolation(field, "expected sessions/{id} or sessions/current")],
            domain=DOMAIN,
        )
    return session_id


class SessionRepository(Protocol):
    async def start(self, session: Session, refresh_token_hash: bytes, give_back: GiveBack) -> None:
        """Stores a new session with its first refresh token and gives the login's
        reservation back, all or nothing, even in a unit of work that is not atomic: a
        login whose session is not stored stays counted as a failed check."""
        ...

    async def add(self, session: Session, refresh_token_hash: bytes) -> None:
        """The session and its first refresh token: a session never exists without one."""
        ...

    async def get(self, session_id: str) -> Session | None: ...

    async def live_for_user(
        self, user_id: str, now: datetime, before: tuple[str, str] | None, limit: int
    ) -> list[Session]:
        """Live sessions newest first, after the (created_at ISO, id) cursor."""
        ...

    async def revoke(self, session_id: str, at: datetime, reason: str) -> bool:
        """True if it was live and is now revoked."""
        ...

    async def revoke_for_user(
        self, user_id: str, at: datetime, reason: str, except_session: str | None = None
    ) -> list[str]:
        """Revoke every live session of the user (but one); their ids."""
        ...

    async def refresh_token_session(self, token_hash: bytes) -> str | None:
        """The session a token (spent or not) belongs to, or None if unknown."""
        ...


class RotationOutcome(enum.Enum):
    ROTATED = "rotated"  # the token was spent and its successor stored
    RETRIED = "retried"  # a retry within the grace: the unused successor replaced by another
    REUSED = "reused"  # the token had been spent before: theft or replay
    UNKNOWN = "unknown"  # no such token
    ENDED = "ended"  # the token was spent, but its session or user is no longer live


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotationOutcome
    session_id: str | None = None
    session: Session | None = None  # as refreshed, when ROTATED
    roles: frozenset[str] = frozenset()  # the user's current roles, when ROTATED


@dataclass(frozen=True, slots=True)
class RetryGrace:
    """When a spent refresh token presented again is a client's retry, not theft.

    A client whose refresh answer was lost (the rotation committed, the answer did not
    arrive) can only present the token it holds again. That is admitted within `window`
    of the token's spend, at most `retries` times, and only while the successor its last
    use issued has never been presented: the retry spends that successor, which nobody
    has used, and issues another in the same family, so the family keeps one live token.
    Any other spent token presented again (after the window, beyond the retries, or once
    its successor was used) is reuse (RFC 9700 §4.14.2) and revokes the family. A zero
    window admits no retry."""

    window: timedelta
    retries: int = 1

    def admits(
        self, spent_at: datetime, successor_known: bool, retried: int, now: datetime
    ) -> bool:
        """Whether a token spent at `spent_at` and retried `retried` times, whose last
        successor is on record, may be retried now. The retry stands only if that
        successor is then still unspent, which the rotator checks as it spends it."""
        return successor_known and retried < self.retries and now < spent_at + self.window


NO_RETRY_GRACE = RetryGrace(timedelta(0))


class RefreshTokenRotator(Protocol):
    async def rotate(
        self, old_hash: bytes, new_hash: bytes, now: datetime, idle_until: datetime
    ) -> Rotation:
        """Spend the token and, if its session is live and its user active, store its
        successor and push the session's idle expiry to `idle_until` (never past the
        absolute end), atomically. Exactly one concurrent caller spends a token.

        A token already spent is a retry (RETRIED) if the rotator's `RetryGrace` admits
        it and its last successor is still unspent: that successor is spent, the retry
        counted, and `new_hash` stored as the family's live token and the token's last
        successor, atomically; otherwise it is REUSED."""
        ...


class SessionStateSource(Protocol):
    async def is_live(self, session_id: str, user_id: str) -> bool:
        """Whether the session exists, is live, and its user is active."""
        ...
