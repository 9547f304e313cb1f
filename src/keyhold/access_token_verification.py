"""Access-token verification (RFC 8725), shared by the server and the client library:
it imports no adapter, so `keyhold.client` may import it.

The signature is checked with `cryptography` (EdDSA through PyJWT's algorithm) for the
key's own algorithm: the header cannot choose it, so `none` and HS256-with-a-public-key
never apply. Parsing and the claim rules are ours, which costs less per token than
`jwt.decode` (docs/benchmarks.md) and lets the clock be injected. Verified claims are
cached by the token's BLAKE2b digest until expiry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import get_default_algorithms

from keyhold.domain.bounded import BoundedMap
from keyhold.domain.clock import Clock
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.jose_canonical import NotBase64url, NotCanonical, decode_segment, es256_has_low_s

MAX_TOKEN_BYTES = 8 * 1024
# Verified tokens remembered (by digest, with their principal); past it the least
# recently verified is forgotten and verified again when it comes back.
VERIFIED_TOKENS_KEPT = 10_000
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")
# NumericDate claims must be representable as a google.protobuf.Timestamp (0001-9999)
# and never precede the epoch: this issuer never wrote one outside these bounds.
LATEST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # session ids and token ids, as issued
_SUBJECT = re.compile(r"^(users|service-accounts)/[A-Za-z0-9_-]{1,64}\Z")
_DOMAIN = "keyhold.identity"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _verify_es256(signed: bytes, public_key: Any, signature: bytes) -> bool:
    """RFC 7518 §3.4: the signature is r ‖ s, 32 bytes each, on P-256."""
    if len(signature) != 64 or not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signed, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


_VERIFIERS: dict[str, Callable[[bytes, Any, bytes], bool]] = {
    "ES256": _verify_es256,
    "EdDSA": get_default_algorithms()["EdDSA"].verify,
}


class RevocationCheck(Protocol):
    """Whether a verified token's session or account still stands."""

    async def check(self, principal: Principal) -> None:
        """Raise Unauthenticated if the principal's session or account is gone."""
        ...

    def known_live(self, principal: Principal) -> bool:
        """True when `check` would pass without waiting."""
        ...


class VerificationKey(Protocol):
    @property
    def algorithm(self) -> str: ...

    @property
    def public_key(self) -> Any: ...


class VerificationKeys(Protocol):
    def get(self, key_id: str) -> VerificationKey | None: ...

    async def reload_if_stale(self) -> bool:
        """Refetch the keys unless that was done recently; True if it refetched."""
        ...


def _cache_key(token: str) -> bytes:
    """The verified-token cache's key: a hash, so the cache holds no token. BLAKE2b is
    CPython's own; OpenSSL's SHA-256 allocates and dispatches an EVP context per call,
    which costs more per token (docs/benchmarks.md)."""
    return hashlib.blake2b(token.encode(), digest_size=32).digest()


def refuse(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(reason, message, domain=_DOMAIN)


def _segment(text: str) -> bytes:
    try:
        return decode_segment(text)
    except NotCanonical as exc:
        raise refuse("TOKEN_NOT_CANONICAL", f"access token is not canonical: {exc}") from exc
    except NotBase64url as exc:
        raise refuse("TOKEN_MALFORMED", "access token is not a well-formed JWT") from exc


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment(segment))
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse("TOKEN_MALFORMED", "access token is not a well-formed JWT") from exc
    if not isinstance(value, dict):
        raise refuse("TOKEN_MALFORMED", "access token is not a well-formed JWT")
    return value


class AccessTokenVerifier:
    def __init__(
        self,
        keys: VerificationKeys,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int,
        clock: Clock,
        cache_size: int = VERIFIED_TOKENS_KEPT,
        revocations: RevocationCheck | None = None,
    ) -> None:
        """`revocations`: run on every verified token; None where this process cannot
        know of revocations (a client of Keyhold: tokens stand until they expire)."""
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._clock = clock
        self._cache: BoundedMap[bytes, Principal] = BoundedMap(cache_size)
        self._revocations = revocations

    def principal_without_waiting(self, token: str) -> Principal | None:
        """The principal of a token verified before, still unexpired, for this audience,
        whose revocation check needs no waiting; None when `verify` must be awaited
        (never an error)."""
        if len(token) > MAX_TOKEN_BYTES:
            return None
        principal = self._cached(_cache_key(token))
        if principal is None or principal.audience != self._audience:
            return None
        if self._revocations is None or self._revocations.known_live(principal):
            return principal
        return None

    async def verify(self, token: str) -> Principal:
        """The principal of a token for this verifier's audience; raises Unauthenticated
        for any token not to be trusted here."""
        principal = await self.verify_any_audience(token)
        if principal.audience != self._audience:
            raise refuse("TOKEN_AUDIENCE_MISMATCH", "access token is for another audience")
        return principal

    async def verify_any_audience(self, token: str) -> Principal:
        """The principal of a token valid by every other rule, whatever its audience: for
        the issuer itself answering about tokens it minted for other services."""
        if len(token) > MAX_TOKEN_BYTES:
            raise refuse("TOKEN_TOO_LARGE", "access token is larger than 8 KiB")
        digest = _cache_key(token)
        principal = self._cached(digest)
        if principal is None:
            principal = await self._verify_uncached(token)
            self._cache.put(digest, principal)
        if self._revocations is not None:
            await self._revocations.check(principal)
        return principal

    def _cached(self, digest: bytes) -> Principal | None:
        principal = self._cache.get(digest)
        if (
            principal is None
            or (principal.expires_at or 0) + self._leeway <= self._clock.timestamp()
        ):
            return None
        return principal

    async def _verify_uncached(self, token: str) -> Principal:
        parts = token.split(".")
        if len(parts) != 3:
            raise refuse("TOKEN_MALFORMED", "access token is not a well-formed JWT")
        header = _json_object(parts[0])
        key_id = header.get("kid")
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise refuse("TOKEN_MALFORMED", "access token has no valid key id")
        if header.get("typ") != TOKEN_TYPE or "crit" in header:
            raise refuse("TOKEN_MALFORMED", "token is not an access token")
        key = self._keys.get(key_id)
        if key is None and await self._keys.reload_if_stale():
            key = self._keys.get(key_id)
        if key is None:
            raise refuse("TOKEN_KEY_UNKNOWN", "access token was signed by an unknown key")
        if header.get("alg") != key.algorithm:
            raise refuse("TOKEN_MALFORMED", "access token algorithm does not match its key")
        signature = _segment(parts[2])
        signed = f"{parts[0]}.{parts[1]}".encode()
        if not _VERIFIERS[key.algorithm](signed, key.public_key, signature):
            raise refuse("TOKEN_SIGNATURE_INVALID", "access token signature is invalid")
        if key.algorithm == "ES256" and not es256_has_low_s(signature):
            raise refuse(
                "TOKEN_NOT_CANONICAL", "access token is not canonical: its ECDSA S is high"
            )
        claims = _json_object(parts[1])
        self._check_claims(claims)
        return self._principal(claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for claim in REQUIRED_CLAIMS:
            if claim not in claims:
                raise refuse("TOKEN_CLAIM_MISSING", f"access token lacks the {claim} claim")
        if claims["iss"] != self._issuer:
            raise refuse("TOKEN_ISSUER_MISMATCH", "access token is from another issuer")
        if not isinstance(claims["aud"], str):  # one audience per token, as Keyhold mints
            raise refuse("TOKEN_AUDIENCE_MISMATCH", "access token must name one audience")
        expires_at, not_before, issued_at = claims["exp"], claims["nbf"], claims["iat"]
        if not all(
            type(value) is int and 0 <= value <= LATEST_NUMERIC_DATE
            for value in (expires_at, not_before, issued_at)
        ):
            raise refuse("TOKEN_MALFORMED", "exp, nbf and iat must be integers in 1970-9999")
        now = self._clock.timestamp()
        if expires_at + self._leeway <= now:
            raise refuse("TOKEN_EXPIRED", "access token has expired")
        if not_before - self._leeway > now or issued_at - self._leeway > now:
            raise refuse("TOKEN_NOT_YET_VALID", "access token is not valid yet")

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        subject, roles, scope = claims["sub"], claims.get("roles", []), claims.get("scope", "")
        session_id, token_id = claims.get("sid"), claims["jti"]
        if not isinstance(subject, str) or not _SUBJECT.match(subject):
            raise refuse("TOKEN_MALFORMED", "access token subject is not a known principal")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise refuse("TOKEN_MALFORMED", "access token roles must be a list of strings")
        if not isinstance(scope, str) or not isinstance(token_id, str):
            raise refuse("TOKEN_MALFORMED", "access token scope and jti must be strings")
        if not _ID.fullmatch(token_id):
            raise refuse("TOKEN_MALFORMED", "access token jti is not a token id")
        actor_chain = _actor_chain(claims.get("act"))
        is_user = subject.startswith("users/")
        if is_user and not isinstance(session_id, str):
            raise refuse("TOKEN_CLAIM_MISSING", "access token lacks the sid claim")
        if is_user and not _ID.fullmatch(str(session_id)):
            raise refuse("TOKEN_MALFORMED", "access token sid is not a session id")
        return Principal(
            type=PrincipalType.USER if is_user else PrincipalType.SERVICE,
            subject=subject,
            roles=frozenset(roles),
            scopes=frozenset(scope.split()),
            session_id=session_id if is_user else None,
            token_id=token_id,
            expires_at=claims["exp"],
            issued_at=claims["iat"],
            audience=claims["aud"],
            actor_chain=actor_chain,
        )


# An `act` claim nests no deeper than this, whatever a token says.
_MAX_ACTORS = 16


def _actor_chain(act: object) -> tuple[str, ...]:
    """The services an `act` claim names, the most recent (outermost) first."""
    chain: list[str] = []
    while act is not None:
        if not isinstance(act, dict) or len(chain) >= _MAX_ACTORS:
            raise refuse("TOKEN_MALFORMED", "access token act claim is malformed")
        actor = act.get("sub")
        if not isinstance(actor, str) or not _SUBJECT.match(actor):
            raise refuse("TOKEN_MALFORMED", "access token act claim is malformed")
        chain.append(actor)
        act = act.get("act")
    return tuple(chain)
