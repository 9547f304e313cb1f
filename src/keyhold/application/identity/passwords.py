"""Password change (revokes the user's other sessions) and reset by a single-use token
(revokes all of them)."""

from __future__ import annotations

from datetime import timedelta

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.lockout import LoginLockout
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.secrets import (
    MAX_SECRET_LENGTH,
    RESET_TOKEN_PREFIX,
    new_secret,
    secret_hash,
)
from keyhold.application.identity.users import not_found
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.one_time_tokens import TokenPurpose
from keyhold.domain.identity.passwords import MAX_LENGTH, PasswordHasher, PasswordPolicy
from keyhold.domain.identity.users import normalize_email
from keyhold.domain.unit_of_work import UnitOfWorkFactory


def _bad_reset_token() -> InvalidArgument:
    return InvalidArgument(
        "RESET_TOKEN_INVALID",
        "the reset token is unknown, used or expired",
        [FieldViolation("reset_token", "request a new password reset")],
        domain=DOMAIN,
    )


class Passwords:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
        reset_token_lifetime: timedelta,
        lockout: LoginLockout,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._hasher = hasher
        self._policy = policy
        self._lockout = lockout
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock
        self._reset_lifetime = reset_token_lifetime

    async def change(self, current_password: str, new_password: str) -> None:
        principal = current_call().principal
        if not current_password or len(current_password) > MAX_LENGTH:
            raise InvalidArgument(
                "PASSWORD_INVALID",
                "current_password is required",
                [FieldViolation("current_password", f"1 to {MAX_LENGTH} characters")],
                domain=DOMAIN,
            )
        async with self._recorder.attempt(Action.PASSWORD_CHANGE, principal.subject):
            async with self._unit_of_work() as uow:
                user = await uow.users.get(principal.subject.removeprefix("users/"))
            if user is None:
                raise not_found(principal.subject)
            # The current password is a guess like a login's: the same reservation.
            reservation = await self._lockout.reserve(user.email, current_call().peer_ip)
            if not await self._hasher.verify(user.password_hash, current_password):
                self._lockout.failed(reservation)
                raise PermissionDenied(
                    "CURRENT_PASSWORD_WRONG", "current_password is wrong", domain=DOMAIN
                )
            await self._lockout.succeeded(reservation)
            self._policy.check(new_password, user.email, "new_password")
            new_hash = await self._hasher.hash(new_password)
            now = self._clock.now()
            async with self._unit_of_work() as uow:
                await uow.users.update(user.with_changes(password_hash=new_hash, updated_at=now))
                revoked = await uow.sessions.revoke_for_user(
                    user.id, now, "password_changed", except_session=principal.session_id
                )
            await self._revocations.sessions_ended(revoked)

    async def create_reset(self, email: str) -> tuple[str, int]:
        """A reset token and its expiry (Unix seconds); ("", 0) when there is no such
        user, so the caller learns nothing about which emails exist."""
        email = normalize_email(email)
        async with (
            self._recorder.attempt(Action.PASSWORD_RESET_CREATE) as attempt,
            self._unit_of_work() as uow,
        ):
            user = await uow.users.by_email(email)
            if user is None:
                attempt.details["user_found"] = "false"
                return "", 0
            attempt.resource_name = user.name
            token, token_hash = new_secret(RESET_TOKEN_PREFIX)
            expires_at = self._clock.now() + self._reset_lifetime
            await uow.one_time_tokens.add(
                token_hash, user.id, TokenPurpose.RESET_PASSWORD, expires_at
            )
        return token, int(expires_at.timestamp())

    async def reset(self, reset_token: str, new_password: str) -> None:
        if not reset_token or len(reset_token) > MAX_SECRET_LENGTH:
            raise _bad_reset_token()
        token_hash = secret_hash(reset_token)
        async with self._recorder.attempt(Action.PASSWORD_RESET) as attempt:
            now = self._clock.now()
            async with self._unit_of_work() as uow:
                user_id = await uow.one_time_tokens.peek(
                    token_hash, TokenPurpose.RESET_PASSWORD, now
                )
                user = await uow.users.get(user_id) if user_id else None
            if user is None:
                raise _bad_reset_token()
            attempt.resource_name = user.name
            self._policy.check(new_password, user.email, "new_password")
            new_hash = await self._hasher.hash(new_password)
            async with self._unit_of_work() as uow:
                if (
                    await uow.one_time_tokens.consume(token_hash, TokenPurpose.RESET_PASSWORD, now)
                    is None
                ):
                    raise _bad_reset_token()
                await uow.users.update(user.with_changes(password_hash=new_hash, updated_at=now))
                revoked = await uow.sessions.revoke_for_user(user.id, now, "password_reset")
            await self._revocations.sessions_ended(revoked)
