"""Token introspection (RFC 7662 in spirit): is this token active, and whose is it."""

from __future__ import annotations

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal
from keyhold.domain.tokens import AccessTokenVerifier


class TokenIntrospection:
    def __init__(self, verifier: AccessTokenVerifier, recorder: AuditRecorder) -> None:
        self._verifier = verifier
        self._recorder = recorder

    async def introspect(self, token: str) -> Principal | None:
        """The principal of an active token; None for expired, revoked, malformed or
        foreign tokens (inactive is an answer, not an error). Telling the caller what
        another principal's active token carries is recorded in the audit trail."""
        try:
            principal = await self._verifier.verify(token)
        except Unauthenticated:
            return None
        token_name = f"tokens/{principal.token_id}" if principal.token_id else principal.subject
        details = {"subject": principal.subject}
        async with self._recorder.read_of(
            Action.TOKEN_INTROSPECT, token_name, owner=principal.subject, details=details
        ):
            return principal
