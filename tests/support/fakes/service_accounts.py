"""Service accounts in memory: the repository, and the lookup outside a unit of work."""

from __future__ import annotations

from datetime import datetime

from keyhold.domain.identity.service_accounts import ServiceAccount
from tests.support.fakes.store import (
    InMemoryStore,
    IntegrityViolation,
    Transaction,
    after_cursor,
)


def _created(account: ServiceAccount) -> tuple[datetime, str]:
    return account.created_at, account.id


def _by_client_id(tx: Transaction, client_id: str) -> ServiceAccount | None:
    return next((a for a in tx.service_accounts.values() if a.client_id == client_id), None)


class InMemoryServiceAccountRepository:
    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def add(self, account: ServiceAccount) -> None:
        if _by_client_id(self._tx, account.client_id) is not None:
            raise IntegrityViolation(f"client id {account.client_id!r} taken")
        self._tx.service_accounts.insert(account.id, account)

    async def get(self, account_id: str) -> ServiceAccount | None:
        return self._tx.service_accounts.get(account_id)

    async def by_client_id(self, client_id: str) -> ServiceAccount | None:
        return _by_client_id(self._tx, client_id)

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[ServiceAccount]:
        return after_cursor(list(self._tx.service_accounts.values()), _created, after)[:limit]

    async def delete(self, account_id: str) -> bool:
        return self._tx.service_accounts.delete(account_id)


class InMemoryServiceAccountLookup:
    """Reads of the committed accounts, each in a transaction of its own."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    async def by_client_id(self, client_id: str) -> ServiceAccount | None:
        return _by_client_id(self._store.begin(), client_id)

    async def exists(self, account_id: str) -> bool:
        return account_id in self._store.begin().service_accounts
