"""Token revocation (RFC 7009 semantics, RevokeToken and `POST /oauth2/revoke`): a
refresh token, or a user's access token, ends the session it belongs to, at once on
every replica. Whatever the token, the caller learns nothing about it: an unknown,
malformed, expired or already revoked token gets the same answer as a revoked one."""

from __future__ import annotations

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.secrets import (
    MAX_SECRET_LENGTH,
    REFRESH_TOKEN_PREFIX,
    secret_hash,
)
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FailedPrecondition, Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.principal import PrincipalType
from keyhold.domain.tokens import AccessTokenVerifier
from keyhold.domain.unit_of_work import UnitOfWorkFactory


class TokenRevocation:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        verifier: AccessTokenVerifier,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._verifier = verifier
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock

    async def revoke(self, token: str) -> None:
        """Ends the session `token` belongs to, if it belongs to a live one.
        TOKEN_TYPE_UNSUPPORTED for a service account's access token."""
        kind = "refresh_token" if token.startswith(REFRESH_TOKEN_PREFIX) else "access_token"
        details = {"token_type": kind}
        async with self._recorder.attempt(Action.TOKEN_REVOKE, "", details) as attempt:
            attempt.details["ended"] = "false"
            if kind == "refresh_token":
                session_id = await self._refresh_token_session(token)
            else:
                session_id = await self._access_token_session(token)
            if session_id is None:
                return
            attempt.resource_name = f"sessions/{session_id}"
            async with self._unit_of_work() as uow:
                ended = await uow.sessions.revoke(session_id, self._clock.now(), "revoked")
            if ended:
                await self._revocations.sessions_ended([session_id])
                attempt.details["ended"] = "true"

    async def _refresh_token_session(self, token: str) -> str | None:
        if len(token) > MAX_SECRET_LENGTH:
            return None
        async with self._unit_of_work(atomic=False) as uow:
            return await uow.sessions.refresh_token_session(secret_hash(token))

    async def _access_token_session(self, token: str) -> str | None:
        try:
            principal = await self._verifier.verify_any_audience(token)
        except Unauthenticated:  # expired, malformed, or its session ended already
            return None
        if principal.type is not PrincipalType.USER or not principal.session_id:
            raise FailedPrecondition(
                "TOKEN_TYPE_UNSUPPORTED",
                "a service account's token cannot be revoked alone; it expires, and "
                "deleting the account ends all of them",
                domain=DOMAIN,
            )
        return principal.session_id
