"""Token exchange (RFC 8693 semantics, as a gRPC method): a service that received a
user's access token obtains one to call another service on that user's behalf."""

from __future__ import annotations

from dataclasses import dataclass

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.api_resources import audience_unknown
from keyhold.domain.identity.service_accounts import account_id_from_name
from keyhold.domain.identity.token_exchange import delegated_chain, exchanged_scopes
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import AccessTokenIssuer, AccessTokenVerifier, IssuedToken
from keyhold.domain.unit_of_work import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class ExchangedToken:
    token: IssuedToken
    scopes: frozenset[str]
    audience: str


def _subject_invalid(message: str) -> InvalidArgument:
    return InvalidArgument(
        "SUBJECT_TOKEN_INVALID",
        message,
        [FieldViolation("subject_token", "a live Keyhold access token of a user")],
        domain=DOMAIN,
    )


class TokenExchange:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        verifier: AccessTokenVerifier,
        tokens: AccessTokenIssuer,
        recorder: AuditRecorder,
        *,
        audience: str,
        max_depth: int,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        """`audience`: Keyhold's own, which exchanged tokens are never for."""
        self._unit_of_work = unit_of_work
        self._verifier = verifier
        self._tokens = tokens
        self._recorder = recorder
        self._audience = audience
        self._max_depth = max_depth
        self._telemetry = telemetry

    async def exchange(
        self, subject_token: str, audience: str, scopes: list[str]
    ) -> ExchangedToken:
        caller = current_call().principal
        account_id = account_id_from_name(caller.subject, "authorization")
        details = {"audience": audience[:256]}
        async with self._recorder.attempt(Action.TOKEN_EXCHANGE, "", details) as attempt:
            subject = await self._subject(subject_token)
            attempt.resource_name = subject.subject
            chain = delegated_chain(subject.actor_chain, caller.subject, self._max_depth)
            attempt.details["actors"] = ",".join(chain)
            if audience == self._audience:
                raise audience_unknown()
            user_id = subject.subject.removeprefix("users/")
            async with self._unit_of_work(atomic=False) as uow:
                terms = await uow.grants.exchange_terms(account_id, user_id, audience)
            if terms is None:
                raise audience_unknown()
            if not terms.delegable:
                raise PermissionDenied(
                    "EXCHANGE_NOT_GRANTED",
                    f"this service may not exchange tokens for api-resources/{terms.resource_id}",
                    domain=DOMAIN,
                )
            granted = exchanged_scopes(frozenset(scopes), terms.user_scopes, terms.delegable)
            attempt.details["scopes"] = ",".join(sorted(granted))
            token = self._tokens.issue(
                subject=subject.subject,
                roles=terms.roles,
                scopes=granted,
                session_id=subject.session_id,
                audience=audience,
                actor_chain=chain,
                not_after=subject.expires_at,
            )
            self._telemetry.token_issued("exchanged")
        return ExchangedToken(token, granted, audience)

    async def _subject(self, subject_token: str) -> Principal:
        """The user a live Keyhold token names, whatever service it was minted for."""
        try:
            subject = await self._verifier.verify_any_audience(subject_token)
        except Unauthenticated as refused:
            raise _subject_invalid(f"the subject token is not valid: {refused.reason}") from None
        if subject.type is not PrincipalType.USER:
            raise _subject_invalid("the subject token is not a user's")
        return subject
