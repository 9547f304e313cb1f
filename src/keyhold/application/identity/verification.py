"""Email verification: a single-use token for a mailer service to deliver."""

from __future__ import annotations

from datetime import timedelta

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.secrets import (
    MAX_SECRET_LENGTH,
    VERIFICATION_TOKEN_PREFIX,
    new_secret,
    secret_hash,
)
from keyhold.application.identity.users import not_found
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.one_time_tokens import TokenPurpose
from keyhold.domain.identity.users import User, user_id_from_name
from keyhold.domain.unit_of_work import UnitOfWorkFactory


class EmailVerification:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        recorder: AuditRecorder,
        clock: Clock,
        token_lifetime: timedelta,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._recorder = recorder
        self._clock = clock
        self._lifetime = token_lifetime

    async def create(self, name: str) -> tuple[str, int]:
        user_id = user_id_from_name(name, current_call().principal.subject)
        async with (
            self._recorder.attempt(Action.EMAIL_VERIFICATION_CREATE, f"users/{user_id}"),
            self._unit_of_work() as uow,
        ):
            user = await uow.users.get(user_id)
            if user is None:
                raise not_found(f"users/{user_id}")
            if user.email_verified:
                raise FailedPrecondition(
                    "EMAIL_ALREADY_VERIFIED", "the email is already verified", domain=DOMAIN
                )
            token, token_hash = new_secret(VERIFICATION_TOKEN_PREFIX)
            expires_at = self._clock.now() + self._lifetime
            await uow.one_time_tokens.add(
                token_hash, user.id, TokenPurpose.VERIFY_EMAIL, expires_at
            )
        return token, int(expires_at.timestamp())

    async def verify(self, verification_token: str) -> User:
        invalid = InvalidArgument(
            "VERIFICATION_TOKEN_INVALID",
            "the verification token is unknown, used or expired",
            [FieldViolation("verification_token", "request a new verification")],
            domain=DOMAIN,
        )
        if not verification_token or len(verification_token) > MAX_SECRET_LENGTH:
            raise invalid
        token_hash = secret_hash(verification_token)
        async with self._recorder.attempt(Action.EMAIL_VERIFY) as attempt:
            now = self._clock.now()
            async with self._unit_of_work() as uow:
                user_id = await uow.one_time_tokens.consume(
                    token_hash, TokenPurpose.VERIFY_EMAIL, now
                )
                user = await uow.users.get(user_id) if user_id else None
                if user is None:
                    raise invalid
                attempt.resource_name = user.name
                verified = user.with_changes(email_verified=True, updated_at=now)
                await uow.users.update(verified)
        return verified
