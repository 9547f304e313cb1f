"""Trusted issuers: external token issuers (a Kubernetes cluster, a SPIFFE trust domain)
whose tokens authenticate the service accounts their subjects are mapped to. The rules
of which account a subject acts as are in `workload_identity.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import PublicKey
from keyhold.domain.identity.api_resources import AUDIENCE
from keyhold.domain.identity.workload_identity import WorkloadMapping

ISSUER_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
MAX_JWKS_URL_LENGTH = 2048
MAX_JWKS_JSON_LENGTH = 65_536
MAX_MAPPINGS_PER_ISSUER = 1000


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    id: str
    issuer: str  # the `iss` its tokens name
    jwks_url: str  # exactly one of jwks_url and jwks_json is set
    jwks_json: str
    audience: str  # what their `aud` must include
    created_at: datetime
    mappings: tuple[WorkloadMapping, ...] = ()

    @property
    def name(self) -> str:
        return f"trusted-issuers/{self.id}"


def issuer_id_from_name(name: str, field: str = "name") -> str:
    collection, _, issuer_id = name.partition("/")
    if collection != "trusted-issuers" or not ISSUER_ID.match(issuer_id):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be trusted-issuers/{{id}}",
            [FieldViolation(field, "expected trusted-issuers/{id}")],
            domain=DOMAIN,
        )
    return issuer_id


def valid_issuer_id(issuer_id: str) -> str:
    if not ISSUER_ID.match(issuer_id):
        raise invalid_issuer("trusted_issuer_id", "a lower-case letter, then up to 62 of a-z 0-9 -")
    return issuer_id


def valid_audience(audience: str) -> str:
    if not AUDIENCE.match(audience):
        raise invalid_issuer(
            "trusted_issuer.audience", "1 to 256 of A-Z a-z 0-9 . _ : / -, the aud to require"
        )
    return audience


def invalid_issuer(field: str, expected: str) -> InvalidArgument:
    return InvalidArgument(
        "TRUSTED_ISSUER_INVALID",
        f"{field} is not valid",
        [FieldViolation(field, f"expected {expected}")],
        domain=DOMAIN,
    )


def issuer_not_found(name: str) -> NotFound:
    return NotFound("TRUSTED_ISSUER_NOT_FOUND", f"{name[:300]} does not exist", domain=DOMAIN)


def issuer_exists(what: str) -> AlreadyExists:
    return AlreadyExists("TRUSTED_ISSUER_EXISTS", f"{what[:600]} is trusted already", domain=DOMAIN)


def mapping_not_found(pattern: str) -> NotFound:
    return NotFound(
        "WORKLOAD_IDENTITY_NOT_FOUND", f"no mapping of {pattern[:512]!r}", domain=DOMAIN
    )


class TrustedIssuerRepository(Protocol):
    async def add(self, issuer: TrustedIssuer) -> None:
        """Stores a new issuer; TRUSTED_ISSUER_EXISTS when its id or its `iss` is taken."""
        ...

    async def get(self, issuer_id: str) -> TrustedIssuer | None:
        """The issuer with its mappings."""
        ...

    async def by_issuer(self, issuer: str) -> TrustedIssuer | None:
        """The issuer whose tokens name `issuer` as `iss`, with its mappings."""
        ...

    async def page(self, after_id: str, limit: int) -> list[TrustedIssuer]:
        """Issuers with their mappings, by id, after `after_id` ("" for the first page)."""
        ...

    async def delete(self, issuer_id: str) -> bool:
        """Removes the issuer and its mappings."""
        ...

    async def map(self, issuer_id: str, mapping: WorkloadMapping) -> None:
        """Adds the mapping, or replaces the one of the same pattern."""
        ...

    async def unmap(self, issuer_id: str, pattern: str) -> bool: ...


class IssuerKeys(Protocol):
    async def key(self, issuer: TrustedIssuer, key_id: str) -> PublicKey | None:
        """The issuer's signing key `key_id`, from its inline JWKS or its
        published one (fetched through the egress policy, cached, fetched again for a
        key it did not have); None when it has none such. Raises Unavailable
        (ISSUER_KEYS_UNAVAILABLE) when its published JWKS cannot be read."""
        ...


class JwkSets(Protocol):
    def read(self, jwks_text: str) -> dict[str, PublicKey]:
        """The public signing keys of a JWK Set by `kid`, each with the one algorithm it
        signs with (its `alg`, or its type's usual one); keys of other types, private
        or without a `kid` are left out. TRUSTED_ISSUER_INVALID for a set that holds
        none."""
        ...
