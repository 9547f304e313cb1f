"""Sessions: login, refresh-token rotation with reuse detection, listing and logout."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.lockout import LoginLockout
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.secrets import (
    MAX_SECRET_LENGTH,
    REFRESH_TOKEN_PREFIX,
    new_secret,
    secret_hash,
)
from keyhold.application.pagination import (
    decode_page_token,
    page_of,
    page_size,
    time_id_cursor,
    time_id_token,
)
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.lockout import LoginLocked, Reservation
from keyhold.domain.identity.passwords import MAX_LENGTH, PasswordHasher
from keyhold.domain.identity.sessions import (
    RefreshTokenRotator,
    RotationOutcome,
    Session,
    session_id_from_name,
)
from keyhold.domain.identity.users import User, normalize_email, user_id_from_name
from keyhold.domain.tokens import AccessTokenIssuer, IssuedToken
from keyhold.domain.unit_of_work import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class SessionTokens:
    session: Session
    access_token: IssuedToken
    refresh_token: str


@dataclass(frozen=True, slots=True)
class SessionLifetimes:
    absolute: timedelta
    idle: timedelta


def _invalid_credentials() -> Unauthenticated:
    # One reason and message for unknown email, wrong password and disabled user.
    return Unauthenticated("INVALID_CREDENTIALS", "the email or password is wrong", domain=DOMAIN)


def _bad_refresh_token() -> Unauthenticated:
    return Unauthenticated("REFRESH_TOKEN_INVALID", "the refresh token is not valid", domain=DOMAIN)


# A retry within the grace issues a pair as a rotation does (RetryGrace says when).
_ISSUED = frozenset({RotationOutcome.ROTATED, RotationOutcome.RETRIED})


def session_not_found(name: str) -> NotFound:
    return NotFound("SESSION_NOT_FOUND", f"{name} does not exist", domain=DOMAIN)


class Sessions:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        hasher: PasswordHasher,
        tokens: AccessTokenIssuer,
        lockout: LoginLockout,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
        lifetimes: SessionLifetimes,
        rotator: RefreshTokenRotator,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._hasher = hasher
        self._tokens = tokens
        self._lockout = lockout
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock
        self._lifetimes = lifetimes
        self._rotator = rotator
        self._telemetry = telemetry

    async def login(self, email: str, password: str, user_agent: str) -> SessionTokens:
        email = normalize_email(email)
        if not password or len(password) > MAX_LENGTH:
            raise InvalidArgument(
                "PASSWORD_INVALID",
                "password is required",
                [FieldViolation("password", f"1 to {MAX_LENGTH} characters")],
                domain=DOMAIN,
            )
        call = current_call()
        details = {"email_sha256": hashlib.sha256(email.encode()).hexdigest()[:16]}
        async with self._recorder.attempt(Action.SESSION_CREATE, "", details) as attempt:
            try:
                # The reservation holds from its commit on, before the check is evaluated.
                async with self._unit_of_work(atomic=False) as uow:
                    reservation = await self._lockout.reserve(
                        email, call.peer_ip, uow.login_failures
                    )
                    user = await uow.users.by_email(email)
            except LoginLocked as locked:
                attempt.details["lock"] = locked.scope.value
                raise
            if user is None:
                await self._hasher.verify_dummy(password)
                verified = False
            else:
                attempt.details["user"] = user.name
                verified = await self._hasher.verify(user.password_hash, password)
            if user is None or not verified or not user.is_active:
                self._lockout.failed(reservation)
                raise _invalid_credentials()
            rehashed = (
                await self._hasher.hash(password)
                if self._hasher.needs_rehash(user.password_hash)
                else None
            )
            result = await self._start(
                user, user_agent or call.user_agent, call.peer, rehashed, reservation
            )
            attempt.resource_name = result.session.name
        return result

    async def _start(
        self,
        user: User,
        user_agent: str,
        peer: str,
        rehashed: str | None,
        reservation: Reservation,
    ) -> SessionTokens:
        """The session, stored with the login's reservation given back (all or nothing:
        a login whose session is not stored stays counted as a failed check); in a
        transaction only when the password's hash is upgraded too."""
        now = self._clock.now()
        session = Session(
            id=uuid.uuid4().hex,
            user_id=user.id,
            user_agent=user_agent[:256],
            peer=peer[:128],
            created_at=now,
            expires_at=now + self._lifetimes.absolute,
            idle_expires_at=now + self._lifetimes.idle,
            last_refresh_at=now,
        )
        refresh_token, refresh_hash = new_secret(REFRESH_TOKEN_PREFIX)
        async with self._unit_of_work(atomic=rehashed is not None) as uow:
            if rehashed is not None:
                await uow.users.update(user.with_changes(password_hash=rehashed))
            await uow.sessions.start(session, refresh_hash, self._lockout.give_back(reservation))
        access = self._tokens.issue(subject=user.name, roles=user.roles, session_id=session.id)
        self._issued()
        return SessionTokens(session, access, refresh_token)

    def _issued(self) -> None:
        self._telemetry.token_issued("access")
        self._telemetry.token_issued("refresh")

    async def refresh(self, refresh_token: str) -> SessionTokens:
        async with self._recorder.attempt(Action.SESSION_REFRESH) as attempt:
            if not refresh_token or len(refresh_token) > MAX_SECRET_LENGTH:
                raise _bad_refresh_token()
            now = self._clock.now()
            new_token, new_hash = new_secret(REFRESH_TOKEN_PREFIX)
            rotation = await self._rotator.rotate(
                secret_hash(refresh_token), new_hash, now, now + self._lifetimes.idle
            )
            if rotation.session_id is not None:
                attempt.resource_name = f"sessions/{rotation.session_id}"
            if rotation.outcome is RotationOutcome.REUSED and rotation.session_id is not None:
                self._telemetry.refresh_reuse_detected()
                await self._revoke_family(rotation.session_id, attempt.details)
                raise Unauthenticated(
                    "REFRESH_TOKEN_REUSED",
                    "this refresh token was already used; the session is revoked",
                    domain=DOMAIN,
                )
            if rotation.outcome is RotationOutcome.ENDED:
                raise Unauthenticated(
                    "SESSION_EXPIRED", "the session has ended; log in again", domain=DOMAIN
                )
            session = rotation.session
            if rotation.outcome not in _ISSUED or session is None:
                raise _bad_refresh_token()
            if rotation.outcome is RotationOutcome.RETRIED:
                attempt.details["retried_within_grace"] = "true"
            access = self._tokens.issue(
                subject=f"users/{session.user_id}", roles=rotation.roles, session_id=session.id
            )
            self._issued()
        return SessionTokens(session, access, new_token)

    async def _revoke_family(self, session_id: str, details: dict[str, str]) -> None:
        """RFC 9700 §4.14.2: a spent refresh token presented again means theft or a
        replay; the whole token family (the session) is revoked."""
        async with self._unit_of_work() as uow:
            await uow.sessions.revoke(session_id, self._clock.now(), "refresh_token_reuse")
        await self._revocations.sessions_ended([session_id])
        details["reuse_detected"] = "true"

    async def page(self, parent: str, size: int, token: str) -> tuple[list[Session], str]:
        user_id = user_id_from_name(parent, current_call().principal.subject, "parent")
        limit = page_size(size)
        query = ["sessions", user_id]
        before = time_id_cursor(decode_page_token(token, query))
        owner = f"users/{user_id}"
        async with (
            self._recorder.read_of(Action.SESSIONS_LIST, owner, owner=owner),
            self._unit_of_work() as uow,
        ):
            found = await uow.sessions.live_for_user(user_id, self._clock.now(), before, limit + 1)
        return page_of(found, limit, lambda last: time_id_token(last.created_at, last.id, query))

    async def delete(self, name: str) -> None:
        principal = current_call().principal
        session_id = session_id_from_name(name, principal.session_id)
        async with self._recorder.attempt(Action.SESSION_DELETE, f"sessions/{session_id}"):
            async with self._unit_of_work() as uow:
                session = await uow.sessions.get(session_id)
                owner = f"users/{session.user_id}" if session else None
                if session is None or (owner != principal.subject and not principal.is_admin):
                    raise session_not_found(f"sessions/{session_id}")
                await uow.sessions.revoke(session_id, self._clock.now(), "logout")
            await self._revocations.sessions_ended([session_id])

    async def owner_of(self, name: str) -> str | None:
        """The subject owning a session, for the authorization owner check."""
        collection, _, session_id = name.partition("/")
        if collection != "sessions" or not session_id:
            return None
        async with self._unit_of_work() as uow:
            session = await uow.sessions.get(session_id)
        return f"users/{session.user_id}" if session else None
