"""API resources and grants on SQLite and PostgreSQL: what a change of a definition
does to the roles and grants that name it is carried by the schema's keys, the same on
both engines, in the unit of work's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWork
from keyhold.domain.errors import AlreadyExists
from keyhold.domain.identity.api_resources import ApiResource, api_resource
from keyhold.domain.identity.grants import ExchangeTerms
from keyhold.domain.identity.service_accounts import ServiceAccount
from keyhold.domain.identity.users import User, UserState
from tests.support.audit import audit_stack
from tests.support.databases import postgres_database

_SEALER = AeadSealer(AeadKeyRing([("k1", bytes(32))]))
NOW = datetime(2026, 12, 4, tzinfo=UTC)
REPORTS = api_resource(
    "reports",
    "Reports",
    "reports.internal",
    {"reports.read": "read", "reports.write": "write"},
    {
        "reports:viewer": frozenset({"reports.read"}),
        "reports:editor": frozenset({"reports.read", "reports.write"}),
    },
).stored(NOW, NOW)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        async with audit_stack(tmp_path, None) as stack:
            yield stack.database
    else:
        async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
            yield stack.database


async def _seed(database: Database) -> None:
    async with SqlUnitOfWork(database, _SEALER) as uow:
        await uow.api_resources.add(REPORTS)
        await uow.service_accounts.add(
            ServiceAccount("acct", "khc_acct", "A", frozenset(), bytes(32), NOW)
        )
        await uow.users.add(
            User(
                "ada",
                "ada@example.com",
                "Ada",
                "x",
                False,
                UserState.ACTIVE,
                frozenset({"user"}),
                NOW,
                NOW,
            )
        )
        await uow.grants.add_account_scopes("acct", "reports", frozenset({"reports.read"}))
        await uow.grants.add_account_scopes("acct", "reports", frozenset({"reports.read"}))
        await uow.grants.set_exchange_scopes("acct", "reports", frozenset({"reports.write"}))
        await uow.grants.add_user_roles("ada", "reports", frozenset({"reports:viewer"}))


async def test_a_definition_reads_back_as_stored(database: Database) -> None:
    await _seed(database)
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        assert await uow.api_resources.get("reports") == REPORTS
        assert await uow.api_resources.by_audience("reports.internal") == REPORTS
        page = await uow.api_resources.page("", 10)
        assert [r.id for r in page] == ["keyhold", "reports"]
        assert page[0].built_in
        assert await uow.api_resources.grants_using("reports") == 3


async def test_the_terms_of_an_exchange_are_read_at_once(database: Database) -> None:
    await _seed(database)
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        terms = await uow.grants.exchange_terms("acct", "ada", "reports.internal")
        assert terms == ExchangeTerms(
            "reports", frozenset({"reports.write"}), {"reports:viewer": frozenset({"reports.read"})}
        )
        assert terms.user_scopes == {"reports.read"}
        stranger = await uow.grants.exchange_terms("nobody", "nobody", "reports.internal")
        assert stranger == ExchangeTerms("reports", frozenset(), {})
        assert await uow.grants.exchange_terms("acct", "ada", "billing.internal") is None


async def test_an_accounts_grant_at_an_audience_is_read_at_once(database: Database) -> None:
    await _seed(database)
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        assert await uow.grants.account_scopes_at("acct", "reports.internal") == {"reports.read"}
        assert await uow.grants.account_scopes_at("nobody", "reports.internal") == frozenset()
        assert await uow.grants.account_scopes_at("acct", "billing.internal") is None


async def test_a_removed_scope_leaves_its_roles_and_grants(database: Database) -> None:
    await _seed(database)
    narrowed = replace(
        REPORTS,
        scopes={"reports.write": "write"},
        roles={"reports:editor": frozenset({"reports.write"})},
    )
    async with SqlUnitOfWork(database, _SEALER) as uow:
        await uow.api_resources.replace(narrowed)
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        assert await uow.api_resources.get("reports") == narrowed
        assert await uow.grants.account_scopes(["acct"]) == {}
        assert await uow.grants.user_roles("ada") == {}  # its role went with the scope
        terms = await uow.grants.exchange_terms("acct", "ada", "reports.internal")
        assert terms is not None
        assert terms.delegable == {"reports.write"}


async def test_a_deleted_resource_takes_every_grant_with_it(database: Database) -> None:
    await _seed(database)
    async with SqlUnitOfWork(database, _SEALER) as uow:
        assert await uow.api_resources.delete("reports")
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        assert await uow.api_resources.get("reports") is None
        assert await uow.grants.exchange_terms("acct", "ada", "reports.internal") is None
        assert await uow.grants.user_roles("ada") == {}
        assert await uow.api_resources.grants_using("reports") == 0


async def test_a_taken_audience_is_refused_and_nothing_is_written(database: Database) -> None:
    await _seed(database)
    copy: ApiResource = replace(REPORTS, id="copy")
    with pytest.raises(AlreadyExists):
        async with SqlUnitOfWork(database, _SEALER) as uow:
            await uow.api_resources.add(copy)
    async with SqlUnitOfWork(database, _SEALER, atomic=False) as uow:
        assert await uow.api_resources.get("copy") is None
