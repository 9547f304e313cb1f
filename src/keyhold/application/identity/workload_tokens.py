"""A token from a trusted external issuer (a Kubernetes projected service-account token,
a SPIFFE JWT-SVID) standing in for a service account's secret: signed by a key of the
issuer's, addressed to the audience the admin configured for it, current, and with a
subject mapped to the account."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from keyhold.domain.clock import Clock
from keyhold.domain.identity.client_assertions import AssertionChecks, refused
from keyhold.domain.identity.service_accounts import ServiceAccount
from keyhold.domain.identity.trusted_issuers import IssuerKeys
from keyhold.domain.identity.workload_identity import (
    WorkloadTokenRules,
    accepted_subject,
    issuer_untrusted,
    mapped_account,
    workload_unmapped,
)
from keyhold.domain.unit_of_work import UnitOfWorkFactory

MAX_ISSUER_LENGTH = 512


class WorkloadTokenChecks(AssertionChecks, Protocol):
    """A client assertion's checks, and a look at the claims before the signature is
    checked: a workload token's issuer names the keys to check it with."""

    def unverified_claims(self, token: str) -> Mapping[str, object]:
        """Its claims before any check: only to find which issuer to check it with."""
        ...


class WorkloadTokens:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        checks: WorkloadTokenChecks,
        keys: IssuerKeys,
        rules: WorkloadTokenRules,
        clock: Clock,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._checks = checks
        self._keys = keys
        self._rules = rules
        self._clock = clock

    async def account(self, token: str) -> ServiceAccount:
        """The service account the token's subject acts as."""
        header = self._checks.header(token)
        issuer_url = self._checks.unverified_claims(token).get("iss")
        if not isinstance(issuer_url, str) or not 0 < len(issuer_url) <= MAX_ISSUER_LENGTH:
            raise issuer_untrusted()
        async with self._unit_of_work(atomic=False) as uow:
            issuer = await uow.trusted_issuers.by_issuer(issuer_url)
        if issuer is None:
            raise issuer_untrusted()
        key_id = header.get("kid")
        key = await self._keys.key(issuer, key_id) if isinstance(key_id, str) else None
        if key is None:
            raise refused("KEY_UNKNOWN", "the token names no key of its issuer")
        if header.get("alg") != key.algorithm:
            raise refused("ASSERTION_INVALID", "the token's algorithm is not its key's")
        claims = self._checks.claims(token, key)
        subject = accepted_subject(
            claims, issuer.issuer, issuer.audience, self._rules, self._clock.timestamp()
        )
        account_id = mapped_account(issuer.mappings, issuer.issuer, subject)
        if account_id is None:
            raise workload_unmapped()
        async with self._unit_of_work(atomic=False) as uow:
            account = await uow.service_accounts.get(account_id)
        if account is None:  # deleted between the two reads; its mappings went with it
            raise workload_unmapped()
        return account
