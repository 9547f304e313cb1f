"""Token introspection (RFC 7662 in spirit): is this token active, and whose is it."""

from __future__ import annotations

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import AccessTokenVerifier
from keyhold.domain.unit_of_work import UnitOfWorkFactory


class TokenIntrospection:
    def __init__(
        self,
        verifier: AccessTokenVerifier,
        recorder: AuditRecorder,
        unit_of_work: UnitOfWorkFactory,
        audience: str,
    ) -> None:
        """`audience`: Keyhold's own; a token for any other is active only while an API
        resource has that audience."""
        self._verifier = verifier
        self._recorder = recorder
        self._unit_of_work = unit_of_work
        self._audience = audience

    async def _audience_known(self, audience: str) -> bool:
        if audience == self._audience:
            return True
        async with self._unit_of_work(atomic=False) as uow:
            return await uow.api_resources.by_audience(audience) is not None

    async def introspect(self, token: str) -> Principal | None:
        """The principal of an active token, for Keyhold or a registered API resource;
        None for expired, revoked, malformed or foreign tokens, and for the audience of
        a resource since deleted (inactive is an answer, not an error).

        A person (an administrator) introspecting another principal's active token is
        recorded in the audit trail. A service's introspections are not, one by one: a
        resource server checking the tokens presented to it learns nothing but whether
        a token it already holds, and whose claims it can read, is still active."""
        try:
            principal = await self._verifier.verify_any_audience(token)
        except Unauthenticated:
            return None
        if not await self._audience_known(principal.audience):
            return None
        if current_call().principal.type is not PrincipalType.USER:
            return principal
        token_name = f"tokens/{principal.token_id}" if principal.token_id else principal.subject
        details = {"subject": principal.subject}
        async with self._recorder.read_of(
            Action.TOKEN_INTROSPECT, token_name, owner=principal.subject, details=details
        ):
            return principal
