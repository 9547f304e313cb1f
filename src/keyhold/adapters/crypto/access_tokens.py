"""Access tokens: JWTs (RFC 9068 `at+jwt`) signed by the key ring, verified per RFC 8725.

The verifier pins the algorithm to the key's, requires every claim, compares `iss` and
`aud` exactly, refuses tokens over 8 KiB before decoding, and caches verified claims
keyed by the token's SHA-256 until the token expires.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import jwt

from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.domain.clock import Clock
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import IssuedToken

MAX_TOKEN_BYTES = 8 * 1024
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUBJECT = re.compile(r"^(users|service-accounts)/[A-Za-z0-9_-]{1,64}$")
_DOMAIN = "keyhold.identity"

PrincipalCheck = Callable[[Principal], Awaitable[None]]


def _refuse(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(reason, message, domain=_DOMAIN)


class AccessTokens:
    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        leeway_seconds: int,
        clock: Clock,
        cache_size: int = 10_000,
    ) -> None:
        self._ring = ring
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._principal_check: PrincipalCheck | None = None

    def set_principal_check(self, check: PrincipalCheck) -> None:
        """Install the revocation check run on every verified token."""
        self._principal_check = check

    def issue(
        self,
        *,
        subject: str,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        session_id: str | None = None,
        lifetime_seconds: int | None = None,
    ) -> IssuedToken:
        signer = self._ring.signer
        now = self._clock.timestamp()
        expires_at = now + (lifetime_seconds or self._lifetime)
        token_id = secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": token_id,
            "roles": sorted(roles),
            "scope": " ".join(sorted(scopes)),
        }
        if session_id is not None:
            claims["sid"] = session_id
        token = jwt.encode(
            claims,
            signer.private_key,
            algorithm=signer.algorithm,
            headers={"kid": signer.key_id, "typ": TOKEN_TYPE},
        )
        return IssuedToken(token, token_id, now, expires_at)

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise _refuse("TOKEN_TOO_LARGE", "access token is larger than 8 KiB")
        digest = hashlib.sha256(token.encode()).digest()
        principal = self._cache.get(digest)
        if (
            principal is None
            or (principal.expires_at or 0) + self._leeway <= self._clock.timestamp()
        ):
            principal = await self._verify_uncached(token)
            self._remember(digest, principal)
        if self._principal_check is not None:
            await self._principal_check(principal)
        return principal

    def forget(self, predicate: Callable[[Principal], bool]) -> None:
        """Drop cached verifications matching `predicate` (after a revocation)."""
        for digest in [d for d, p in self._cache.items() if predicate(p)]:
            del self._cache[digest]

    def _remember(self, digest: bytes, principal: Principal) -> None:
        self._cache[digest] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refuse("TOKEN_MALFORMED", "access token is not a well-formed JWT") from exc
        key_id = header.get("kid")
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise _refuse("TOKEN_MALFORMED", "access token has no valid key id")
        if header.get("typ") != TOKEN_TYPE:
            raise _refuse("TOKEN_MALFORMED", "token is not an access token")
        key = self._ring.get(key_id)
        if key is None and await self._ring.reload_if_stale():
            key = self._ring.get(key_id)
        if key is None:
            raise _refuse("TOKEN_KEY_UNKNOWN", "access token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # Time claims are checked below against the injected clock.
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise _refuse(
                "TOKEN_AUDIENCE_MISMATCH", "access token is for another audience"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise _refuse("TOKEN_ISSUER_MISMATCH", "access token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _refuse(
                "TOKEN_CLAIM_MISSING", f"access token lacks the {exc.claim} claim"
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise _refuse("TOKEN_SIGNATURE_INVALID", "access token signature is invalid") from exc
        except jwt.PyJWTError as exc:
            raise _refuse("TOKEN_MALFORMED", "access token is invalid") from exc
        self._check_times(claims)
        return self._principal(claims)

    def _check_times(self, claims: dict[str, object]) -> None:
        expires_at, not_before, issued_at = claims["exp"], claims["nbf"], claims["iat"]
        if not all(type(value) is int for value in (expires_at, not_before, issued_at)):
            raise _refuse("TOKEN_MALFORMED", "exp, nbf and iat must be integers")
        assert isinstance(expires_at, int)
        assert isinstance(not_before, int)
        assert isinstance(issued_at, int)
        now = self._clock.timestamp()
        if expires_at + self._leeway <= now:
            raise _refuse("TOKEN_EXPIRED", "access token has expired")
        if not_before - self._leeway > now or issued_at - self._leeway > now:
            raise _refuse("TOKEN_NOT_YET_VALID", "access token is not valid yet")

    def _principal(self, claims: dict[str, object]) -> Principal:
        subject, roles, scope, session_id = (
            claims["sub"],
            claims.get("roles", []),
            claims.get("scope", ""),
            claims.get("sid"),
        )
        if not isinstance(subject, str) or not _SUBJECT.match(subject):
            raise _refuse("TOKEN_MALFORMED", "access token subject is not a known principal")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _refuse("TOKEN_MALFORMED", "access token roles must be a list of strings")
        if not isinstance(scope, str):
            raise _refuse("TOKEN_MALFORMED", "access token scope must be a string")
        is_user = subject.startswith("users/")
        if is_user and not isinstance(session_id, str):
            raise _refuse("TOKEN_CLAIM_MISSING", "access token lacks the sid claim")
        expires_at, issued_at, token_id = claims["exp"], claims["iat"], claims["jti"]
        return Principal(
            type=PrincipalType.USER if is_user else PrincipalType.SERVICE,
            subject=subject,
            roles=frozenset(roles),
            scopes=frozenset(scope.split()),
            session_id=session_id if is_user and isinstance(session_id, str) else None,
            token_id=str(token_id),
            expires_at=expires_at if isinstance(expires_at, int) else None,
            issued_at=issued_at if isinstance(issued_at, int) else None,
        )
