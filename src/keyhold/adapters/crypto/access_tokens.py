"""Access tokens issued by this service: JWTs (RFC 9068 `at+jwt`) signed by the key
ring's newest key, and verified against every key of the ring."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

import jwt

from keyhold.access_token_verification import (
    TOKEN_TYPE,
    VERIFIED_TOKENS_KEPT,
    AccessTokenVerifier,
    RevocationCheck,
)
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.domain.clock import Clock
from keyhold.domain.tokens import IssuedToken
from keyhold.jose_canonical import with_low_s


class AccessTokens(AccessTokenVerifier):
    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        leeway_seconds: int,
        clock: Clock,
        cache_size: int = VERIFIED_TOKENS_KEPT,
        revocations: RevocationCheck | None = None,
    ) -> None:
        super().__init__(
            ring,
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
            clock=clock,
            cache_size=cache_size,
            revocations=revocations,
        )
        self._ring = ring
        self._lifetime = lifetime_seconds

    def issue(
        self,
        *,
        subject: str,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        session_id: str | None = None,
        lifetime_seconds: int | None = None,
        audience: str | None = None,
        actor_chain: Sequence[str] = (),
        not_after: int | None = None,
    ) -> IssuedToken:
        signer = self._ring.signer
        now = self._clock.timestamp()
        expires_at = now + (lifetime_seconds or self._lifetime)
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        token_id = secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": audience or self._audience,
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
        act: dict[str, object] | None = None
        for actor in reversed(actor_chain):  # RFC 8693 §4.1: the most recent outermost
            act = {"sub": actor} if act is None else {"sub": actor, "act": act}
        if act is not None:
            claims["act"] = act
        token = jwt.encode(
            claims,
            signer.private_key,
            algorithm=signer.algorithm,
            headers={"kid": signer.key_id, "typ": TOKEN_TYPE},
        )
        return IssuedToken(with_low_s(token), token_id, now, expires_at)
