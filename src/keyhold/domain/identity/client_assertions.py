"""Client assertions (RFC 7523 §3, `private_key_jwt`): the claims a service account's
signed JWT must carry to stand in for its secret (docs/security.md).

The signature is checked elsewhere, against the account's registered keys; these rules
cover what the header and the claims must say. Every refusal is UNAUTHENTICATED with a
reason of its own, so that an operator can tell a clock problem from a forgery."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import PublicKey

ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
MAX_JTI_LENGTH = 256
MAX_KID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class AssertionRules:
    audience: str  # Keyhold's issuer URL, which the assertion must name
    max_lifetime_seconds: int
    leeway_seconds: int


@dataclass(frozen=True, slots=True)
class AcceptedAssertion:
    key_id: str
    token_id: str  # `jti`: never to be accepted again before `expires_at`
    expires_at: int


def accepted_assertion(
    header: Mapping[str, object],
    claims: Mapping[str, object],
    client_id: str,
    rules: AssertionRules,
    now: int,
) -> AcceptedAssertion:
    algorithm, key_id = header.get("alg"), header.get("kid")
    if algorithm not in ALGORITHMS:
        raise refused("ASSERTION_INVALID", "the assertion's algorithm is not accepted")
    if not isinstance(key_id, str) or not 0 < len(key_id) <= MAX_KID_LENGTH:
        raise refused("KEY_UNKNOWN", "the assertion names no key of this account")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise refused("ASSERTION_INVALID", "iss and sub must both be the client id")
    if not names_audience(claims.get("aud"), rules.audience):
        raise refused("ASSERTION_AUDIENCE", "the assertion is not addressed to Keyhold")
    issued_at, expires_at = numeric_date(claims.get("iat")), numeric_date(claims.get("exp"))
    if issued_at is None or expires_at is None:
        raise refused("ASSERTION_INVALID", "iat and exp must be numeric dates")
    if expires_at - issued_at > rules.max_lifetime_seconds:
        raise refused("ASSERTION_TOO_LONG_LIVED", "the assertion lives too long")
    if expires_at <= now - rules.leeway_seconds or issued_at > now + rules.leeway_seconds:
        raise refused("ASSERTION_EXPIRED", "the assertion is expired or not yet valid")
    token_id = claims.get("jti")
    if not isinstance(token_id, str) or not 0 < len(token_id) <= MAX_JTI_LENGTH:
        raise refused("ASSERTION_INVALID", "the assertion needs a jti")
    return AcceptedAssertion(key_id, token_id, expires_at)


def names_audience(audience: object, expected: str) -> bool:
    if isinstance(audience, str):
        return audience == expected
    return isinstance(audience, list) and len(audience) <= 16 and expected in audience


def numeric_date(value: object) -> int | None:
    """A NumericDate (RFC 7519 §2, possibly fractional) in whole seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value)


def refused(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(reason, message, domain=DOMAIN)


class AssertionChecks(Protocol):
    """The cryptography of a client assertion (the rules above judge what it says)."""

    def header(self, assertion: str) -> Mapping[str, object]:
        """Its header, unverified; ASSERTION_INVALID when it is no JWT."""
        ...

    def claims(self, assertion: str, key: PublicKey) -> Mapping[str, object]:
        """Its claims, if `key` signed it with `key`'s algorithm; else ASSERTION_INVALID."""
        ...


class AssertionReplays(Protocol):
    """The record of assertions seen (`AccountKeyLookup.first_use` writes it)."""

    async def forget_before(self, before: datetime) -> int:
        """Drops what expired before `before`; how many."""
        ...


def replayed() -> Unauthenticated:
    return refused("ASSERTION_REPLAYED", "this assertion was presented before")
