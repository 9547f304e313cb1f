"""How a service account proves itself to the client-credentials grant: its client
secret, a client assertion (RFC 7523 `private_key_jwt`) signed by one of its
registered keys, short-lived and never presented before, or a token of a trusted
external issuer whose subject is mapped to it."""

from __future__ import annotations

import hmac

from keyhold.application.identity.client_assertions import ClientAssertions, invalid_client
from keyhold.application.identity.secrets import MAX_SECRET_LENGTH, secret_hash
from keyhold.application.identity.workload_tokens import WorkloadTokens
from keyhold.domain.errors import FieldViolation, InvalidArgument, Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.service_accounts import ServiceAccount, ServiceAccountLookup

_NO_SECRET = bytes(32)
MAX_CLIENT_ID_LENGTH = 64


class ClientAuthentication:
    def __init__(
        self,
        lookup: ServiceAccountLookup,
        assertions: ClientAssertions,
        workloads: WorkloadTokens,
    ) -> None:
        self._lookup = lookup
        self._assertions = assertions
        self._workloads = workloads

    async def account(
        self, client_id: str, client_secret: str, client_assertion: str, subject_token: str = ""
    ) -> ServiceAccount:
        """The account `client_id` names, if the one credential given proves it; with a
        workload token, the account its subject is mapped to (`client_id`, if given,
        must name that account)."""
        if sum(map(bool, (client_secret, client_assertion, subject_token))) > 1:
            raise InvalidArgument(
                "CLIENT_CREDENTIALS_AMBIGUOUS",
                "give one of a client secret, a client assertion and a subject token",
                [FieldViolation("client_assertion", "only without the other credentials")],
                domain=DOMAIN,
            )
        if len(client_id) > MAX_CLIENT_ID_LENGTH:
            raise invalid_client()
        if subject_token:
            return await self._by_workload_token(client_id, subject_token)
        if not client_id:
            raise invalid_client()
        if client_assertion:
            return await self._assertions.account(client_id, client_assertion)
        if len(client_secret) > MAX_SECRET_LENGTH:
            raise invalid_client()
        account = await self._lookup.by_client_id(client_id)
        expected = account.secret_hash if account else _NO_SECRET
        matches = hmac.compare_digest(secret_hash(client_secret), expected)
        if account is None or not matches:
            raise invalid_client()
        if account.refuses_secrets:
            raise Unauthenticated(
                "SECRETS_REFUSED",
                "this account accepts client assertions only",
                domain=DOMAIN,
            )
        return account

    async def _by_workload_token(self, client_id: str, token: str) -> ServiceAccount:
        account = await self._workloads.account(token)
        if client_id and client_id != account.client_id:
            raise invalid_client()
        return account
