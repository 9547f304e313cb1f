"""Token introspection (RFC 7662 in spirit): is this token active, and whose is it."""

from __future__ import annotations

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import AccessTokenVerifier


class TokenIntrospection:
    def __init__(self, verifier: AccessTokenVerifier, recorder: AuditRecorder) -> None:
        self._verifier = verifier
        self._recorder = recorder

    async def introspect(self, token: str) -> Principal | None:
        """The principal of an active token, for whichever audience Keyhold minted it;
        None for expired, revoked, malformed or foreign tokens (inactive is an answer,
        not an error).

        A person (an administrator) introspecting another principal's active token is
        recorded in the audit trail. A service's introspections are not, one by one: a
        resource server checking the tokens presented to it learns nothing but whether
        a token it already holds, and whose claims it can read, is still active."""
        try:
            principal = await self._verifier.verify_any_audience(token)
        except Unauthenticated:
            return None
        if current_call().principal.type is not PrincipalType.USER:
            return principal
        token_name = f"tokens/{principal.token_id}" if principal.token_id else principal.subject
        details = {"subject": principal.subject}
        async with self._recorder.read_of(
            Action.TOKEN_INTROSPECT, token_name, owner=principal.subject, details=details
        ):
            return principal
