"""Service accounts: machine principals that authenticate with client credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import FieldViolation, InvalidArgument, NotFound
from keyhold.domain.identity import DOMAIN

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    id: str
    client_id: str
    display_name: str
    scopes: frozenset[str]
    secret_hash: bytes
    created_at: datetime
    refuses_secrets: bool = False  # then only a client assertion proves it

    @property
    def name(self) -> str:
        return f"service-accounts/{self.id}"


def account_id_from_name(name: str, field: str = "name") -> str:
    collection, _, account_id = name.partition("/")
    if collection != "service-accounts" or not ACCOUNT_ID.match(account_id):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be service-accounts/{{id}}",
            [FieldViolation(field, "expected service-accounts/{id}")],
            domain=DOMAIN,
        )
    return account_id


def account_not_found(name: str) -> NotFound:
    return NotFound("SERVICE_ACCOUNT_NOT_FOUND", f"{name} does not exist", domain=DOMAIN)


class ServiceAccountRepository(Protocol):
    async def add(self, account: ServiceAccount) -> None: ...

    async def get(self, account_id: str) -> ServiceAccount | None: ...

    async def by_client_id(self, client_id: str) -> ServiceAccount | None: ...

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[ServiceAccount]: ...

    async def update(self, account: ServiceAccount) -> None:
        """Stores its display name and whether it refuses secrets."""
        ...

    async def set_scopes(self, account_id: str, scopes: frozenset[str]) -> None:
        """Its scopes on Keyhold itself; tokens issued before keep theirs."""
        ...

    async def delete(self, account_id: str) -> bool: ...


class ServiceAccountLookup(Protocol):
    """Reads outside a unit of work, for the hot paths (token grant, revocation check)."""

    async def by_client_id(self, client_id: str) -> ServiceAccount | None: ...

    async def exists(self, account_id: str) -> bool: ...
