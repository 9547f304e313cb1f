"""Service accounts and the client-credentials grant."""

from __future__ import annotations

from datetime import datetime

import pytest

from keyhold.adapters.crypto.client_assertions import JwtAssertions
from keyhold.application.identity.client_assertions import ClientAssertions
from keyhold.application.identity.client_authentication import ClientAuthentication
from keyhold.application.identity.revocations import SERVICE_ACCOUNT
from keyhold.application.identity.secrets import secret_hash
from keyhold.application.identity.service_accounts import ServiceAccounts
from keyhold.application.identity.workload_tokens import WorkloadTokens
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated
from keyhold.domain.identity.account_keys import PublicKey
from keyhold.domain.identity.client_assertions import AssertionRules
from keyhold.domain.identity.service_accounts import ServiceAccount
from keyhold.domain.identity.trusted_issuers import TrustedIssuer
from keyhold.domain.identity.workload_identity import WorkloadTokenRules
from keyhold.domain.principal import PrincipalType
from tests.unit.application.harness import (
    ADMIN,
    AUDIENCE,
    Ports,
    act_as,
    attempts,
    outcome_details,
)

SCOPES = ["audit.read", "identity.introspect"]


class NoAccountKeys:
    """Account keys for tests that present no client assertion."""

    async def account_with_key(
        self, client_id: str, key_id: str
    ) -> tuple[ServiceAccount, PublicKey | None] | None:
        return None

    async def first_use(
        self, client_id: str, key: PublicKey, token_id: str, expires_at: datetime
    ) -> tuple[ServiceAccount, bool] | None:
        return None


class NoIssuerKeys:
    """Trusted issuers' keys for tests that present no workload token."""

    async def key(self, issuer: TrustedIssuer, key_id: str) -> PublicKey | None:
        return None


@pytest.fixture
def accounts(ports: Ports) -> ServiceAccounts:
    clients = ClientAuthentication(
        ports.account_lookup,
        ClientAssertions(
            NoAccountKeys(),
            JwtAssertions(),
            AssertionRules(
                audience="https://keyhold.test", max_lifetime_seconds=300, leeway_seconds=0
            ),
            ports.clock,
        ),
        WorkloadTokens(
            ports.unit_of_work,
            JwtAssertions(),
            NoIssuerKeys(),
            WorkloadTokenRules(max_lifetime_seconds=3600, leeway_seconds=0),
            ports.clock,
        ),
    )
    return ServiceAccounts(
        ports.unit_of_work,
        clients,
        ports.tokens,
        ports.recorder,
        ports.revocations,
        ports.clock,
        AUDIENCE,
    )


async def _created(accounts: ServiceAccounts) -> tuple[ServiceAccount, str]:
    act_as(ADMIN)
    account, secret = await accounts.create("Auditor", SCOPES)
    act_as()
    return account, secret


async def test_create_stores_only_the_secrets_hash(ports: Ports, accounts: ServiceAccounts) -> None:
    account, secret = await _created(accounts)

    assert secret.startswith("khs_")
    assert account.client_id.startswith("khc_")
    assert ports.store.tables.service_accounts[account.id] == account
    assert account.secret_hash == secret_hash(secret)
    assert account.scopes == frozenset(SCOPES)
    assert attempts(ports, Action.SERVICE_ACCOUNT_CREATE) == [
        ("attempted", account.name, ""),
        ("succeeded", account.name, ""),
    ]
    assert outcome_details(ports, Action.SERVICE_ACCOUNT_CREATE) == {
        "scopes": "audit.read,identity.introspect",
        "client_id": account.client_id,
    }
    assert secret not in str(ports.audit.records())


async def test_an_unknown_scope_is_refused(ports: Ports, accounts: ServiceAccounts) -> None:
    act_as(ADMIN)

    with pytest.raises(InvalidArgument) as raised:
        await accounts.create("Auditor", ["everything"])

    assert raised.value.reason == "SCOPE_UNKNOWN"
    assert ports.store.tables.service_accounts == {}


async def test_the_right_secret_gets_a_token_for_the_account(
    ports: Ports, accounts: ServiceAccounts
) -> None:
    account, secret = await _created(accounts)

    granted = await accounts.issue_token(account.client_id, secret, ["audit.read"])

    assert granted.scopes == frozenset({"audit.read"})
    principal = await ports.tokens.verify(granted.token.token)
    assert (principal.type, principal.subject) == (PrincipalType.SERVICE, account.name)
    assert principal.scopes == frozenset({"audit.read"})
    all_scopes = await accounts.issue_token(account.client_id, secret, [])
    assert all_scopes.scopes == frozenset(SCOPES)
    assert attempts(ports, Action.SERVICE_TOKEN_CREATE)[:2] == [
        ("attempted", "", ""),
        ("succeeded", account.name, ""),
    ]


async def test_a_wrong_secret_and_an_unknown_client_get_one_answer(
    ports: Ports, accounts: ServiceAccounts
) -> None:
    account, secret = await _created(accounts)

    for client_id, client_secret in ((account.client_id, secret + "x"), ("khc_nobody", secret)):
        with pytest.raises(Unauthenticated) as raised:
            await accounts.issue_token(client_id, client_secret, [])
        assert raised.value.reason == "INVALID_CLIENT"

    assert (
        attempts(ports, Action.SERVICE_TOKEN_CREATE)
        == [
            ("attempted", "", ""),
            ("denied", "", "INVALID_CLIENT"),
        ]
        * 2
    )
    assert outcome_details(ports, Action.SERVICE_TOKEN_CREATE) == {
        "client_id": "khc_nobody",
        "audience": AUDIENCE,
    }


async def test_a_scope_beyond_the_grant_is_refused(ports: Ports, accounts: ServiceAccounts) -> None:
    account, secret = await _created(accounts)

    with pytest.raises(PermissionDenied) as raised:
        await accounts.issue_token(account.client_id, secret, ["provider.credentials.read"])

    assert raised.value.reason == "SCOPE_NOT_GRANTED"
    assert attempts(ports, Action.SERVICE_TOKEN_CREATE)[-1] == (
        "denied",
        account.name,
        "SCOPE_NOT_GRANTED",
    )


async def test_deleting_the_account_ends_its_tokens(
    ports: Ports, accounts: ServiceAccounts
) -> None:
    account, secret = await _created(accounts)
    granted = await accounts.issue_token(account.client_id, secret, [])
    act_as(ADMIN)

    await accounts.delete(account.name)

    assert ports.store.tables.service_accounts == {}
    assert ports.replicas.published == [(SERVICE_ACCOUNT, [account.name])]
    with pytest.raises(Unauthenticated) as revoked:
        await ports.tokens.verify(granted.token.token)
    assert revoked.value.reason == "SERVICE_ACCOUNT_REVOKED"
    with pytest.raises(Unauthenticated):
        await accounts.issue_token(account.client_id, secret, [])
    assert attempts(ports, Action.SERVICE_ACCOUNT_DELETE) == [
        ("attempted", account.name, ""),
        ("succeeded", account.name, ""),
    ]
