"""Client assertions (RFC 7523) and workload tokens checked with PyJWT against a public
key (an account's registered one, or a trusted issuer's): the signature and the
algorithm pinned to the key's; the claims are the domain's to judge
(`domain/identity/client_assertions.py`, `workload_identity.py`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jwt

from keyhold.domain.bounded import BoundedMap
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import PublicKey
from keyhold.jose_canonical import decode_segment


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated("ASSERTION_INVALID", message, domain=DOMAIN)


class JwtAssertions:
    """`capacity` bounds the parsed keys kept, by their JWK text: parsing a JWK is most
    of a check's work, and a key's text names the key, so a kept one is never stale."""

    def __init__(self, capacity: int = 1024) -> None:
        self._parsed: BoundedMap[str, jwt.PyJWK] = BoundedMap(capacity)

    def header(self, assertion: str) -> Mapping[str, object]:
        """The header, unverified: which key to check the assertion with. Only the
        header is decoded; the signature check decodes the rest."""
        encoded, dot, _ = assertion.partition(".")
        try:
            header: Any = json.loads(decode_segment(encoded)) if dot else None
        except (ValueError, RecursionError):  # not base64url, not JSON, nested too deep
            header = None
        if not isinstance(header, dict):
            raise _invalid("the assertion is not a JWT")
        return header

    def unverified_claims(self, assertion: str) -> Mapping[str, object]:
        """The claims before any check: only to find which issuer to check them with."""
        try:
            claims: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid("the assertion is not a JWT") from None
        return claims

    def claims(self, assertion: str, key: PublicKey) -> Mapping[str, object]:
        """The claims of an assertion signed by `key`, with `key`'s algorithm."""
        try:
            verifying = self._parsed.get(key.public_jwk)
            if verifying is None:
                verifying = jwt.PyJWK(json.loads(key.public_jwk))
                self._parsed.put(key.public_jwk, verifying)
            claims: dict[str, Any] = jwt.decode(
                assertion,
                verifying.key,
                algorithms=[key.algorithm],
                options={
                    "verify_signature": True,
                    "verify_exp": False,  # the domain's rules judge the claims
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except (jwt.PyJWTError, ValueError):
            raise _invalid("the assertion's signature does not verify") from None
        return claims
