"""Public keys registered on a service account: what it signs client assertions
(RFC 7523, `private_key_jwt`) with, instead of presenting a shared secret."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.service_accounts import ACCOUNT_ID, ServiceAccount

KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
MAX_KEYS_PER_ACCOUNT = 20


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verified public key as a JWK: its `kid`, algorithm, and JSON text."""

    key_id: str
    algorithm: str
    public_jwk: str


@dataclass(frozen=True, slots=True)
class AccountKey:
    account_id: str
    key: PublicKey
    created_at: datetime

    @property
    def name(self) -> str:
        return f"service-accounts/{self.account_id}/keys/{self.key.key_id}"


def key_name_parts(name: str, field: str = "name") -> tuple[str, str]:
    """`service-accounts/{id}/keys/{key_id}` → (account id, key id)."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "service-accounts"
        or parts[2] != "keys"
        or not ACCOUNT_ID.match(parts[1])
        or not KEY_ID.match(parts[3])
    ):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be service-accounts/{{id}}/keys/{{key_id}}",
            [FieldViolation(field, "expected service-accounts/{id}/keys/{key_id}")],
            domain=DOMAIN,
        )
    return parts[1], parts[3]


def key_invalid(message: str) -> InvalidArgument:
    return InvalidArgument(
        "KEY_INVALID",
        message,
        [
            FieldViolation(
                "public_jwk", "a public EdDSA, ES256 or RS256 (2048+ bits) JWK with a kid"
            )
        ],
        domain=DOMAIN,
    )


def key_exists(name: str) -> AlreadyExists:
    return AlreadyExists("KEY_EXISTS", f"{name} exists", domain=DOMAIN)


def key_not_found(name: str) -> NotFound:
    return NotFound("KEY_NOT_FOUND", f"{name[:300]} does not exist", domain=DOMAIN)


class PublicKeyReader(Protocol):
    def read(self, jwk_text: str) -> PublicKey:
        """The public key a JWK describes; KEY_INVALID for anything else (a private key,
        another algorithm, a short RSA key, no `kid`)."""
        ...


class AccountKeyRepository(Protocol):
    async def add(self, key: AccountKey) -> None:
        """Stores a new key; KEY_EXISTS when the account has one of that id."""
        ...

    async def count(self, account_id: str) -> int: ...

    async def page(self, account_id: str, after_key_id: str, limit: int) -> list[AccountKey]:
        """The account's keys by id, after `after_key_id` ("" for the first page)."""
        ...

    async def delete(self, account_id: str, key_id: str) -> bool: ...


class AccountKeyLookup(Protocol):
    """A read outside a unit of work, for the client-assertion grant."""

    async def account_with_key(
        self, client_id: str, key_id: str
    ) -> tuple[ServiceAccount, PublicKey | None] | None:
        """The account `client_id` names and its key `key_id` (None when it has no such
        key), in one read; None when no account has that client id."""
        ...

    async def first_use(
        self, client_id: str, key: PublicKey, token_id: str, expires_at: datetime
    ) -> tuple[ServiceAccount, bool] | None:
        """If `key` is still registered on the account `client_id` names: the account,
        and whether (client id, `token_id`) was recorded now for the first time (it is
        then kept until `expires_at`, shared by every replica). None, recording nothing,
        when the key is no longer registered."""
        ...
