"""Client assertions (RFC 7523 `private_key_jwt`): a service account proves itself to
Keyhold by a short-lived JWT signed with its private key, whose public half is
registered on the account."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Keyhold registers RSA keys of at least this size only.
MIN_RSA_BITS = 2048


def load_private_key(key: bytes | str | PrivateKey) -> PrivateKey:
    """`key` itself, or the unencrypted PEM private key it holds. Raises ValueError for
    anything else, or for a key Keyhold would not accept (see `signing_algorithm`)."""
    if isinstance(key, str | bytes):
        data = key.encode() if isinstance(key, str) else key
        loaded = serialization.load_pem_private_key(data, password=None)
    else:
        loaded = key
    if not isinstance(
        loaded, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise ValueError("the key must be an Ed25519, P-256 or RSA private key")
    signing_algorithm(loaded)
    return loaded


def signing_algorithm(key: PrivateKey) -> str:
    """The JWS algorithm Keyhold expects of `key`: EdDSA for Ed25519, ES256 for P-256,
    RS256 for RSA of at least 2048 bits. Raises ValueError for any other key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key must be on P-256, not {key.curve.name}")
        return "ES256"
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"an RSA key needs at least {MIN_RSA_BITS} bits")
    return "RS256"


class ClientAssertionSigner:
    """Signs a fresh assertion on every `sign()`: header `kid` = `key_id` and the key's
    algorithm; claims `iss` = `sub` = `client_id`, `aud` = `keyhold_issuer`, `iat` now,
    `exp` `lifetime_seconds` later and a random `jti`, so that no two assertions are
    the same and none is refused as a replay."""

    def __init__(
        self,
        client_id: str,
        key: bytes | str | PrivateKey,
        key_id: str,
        keyhold_issuer: str,
        *,
        lifetime_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = load_private_key(key)
        self._algorithm = signing_algorithm(self._key)
        self._client_id = client_id
        self._key_id = key_id
        self._audience = keyhold_issuer
        self._lifetime = lifetime_seconds
        self._clock = clock

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def sign(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._lifetime,
            "jti": secrets.token_urlsafe(24),
        }
        return jwt.encode(claims, self._key, self._algorithm, {"kid": self._key_id})
