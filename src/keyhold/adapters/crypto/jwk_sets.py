"""The signing keys of an external issuer's JWK Set (RFC 7517 §5), read with PyJWT: the
public asymmetric keys with a `kid`, each with the one algorithm it signs with."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from keyhold.domain.identity.account_keys import KEY_ID, PublicKey
from keyhold.domain.identity.trusted_issuers import invalid_issuer

MAX_KEYS = 100
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# (kty, crv) → the algorithms a key of that kind may sign with; the first is assumed
# when the key names none.
_ALGORITHMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("RSA", ""): ("RS256", *sorted(_RSA - {"RS256"})),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("OKP", "Ed25519"): ("EdDSA",),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = frozenset({"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"})
_MIN_RSA_BITS = 2048


class PyJwtJwkSets:
    def read(self, jwks_text: str) -> dict[str, PublicKey]:
        try:
            document: Any = json.loads(jwks_text)
        except (ValueError, RecursionError):
            raise _invalid() from None
        listed = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(listed, list):
            raise _invalid()
        keys: dict[str, PublicKey] = {}
        for jwk in listed[:MAX_KEYS]:
            key = _signing_key(jwk)
            if key is not None and key.key_id not in keys:
                keys[key.key_id] = key
        if not keys:
            raise _invalid()
        return keys


def _signing_key(jwk: object) -> PublicKey | None:
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        return None
    key_id, use = jwk.get("kid"), jwk.get("use", "sig")
    if not isinstance(key_id, str) or not KEY_ID.match(key_id) or use != "sig":
        return None
    key_type = str(jwk.get("kty"))
    allowed = _ALGORITHMS.get((key_type, "" if key_type == "RSA" else str(jwk.get("crv"))))
    algorithm = jwk.get("alg", allowed[0] if allowed else None)
    if allowed is None or algorithm not in allowed:
        return None
    kept = {name: value for name, value in jwk.items() if name in _PUBLIC_MEMBERS}
    kept["alg"] = algorithm
    try:
        parsed = jwt.PyJWK(kept)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < _MIN_RSA_BITS:
        return None
    return PublicKey(key_id, algorithm, json.dumps(kept, sort_keys=True))


def _invalid() -> Exception:
    return invalid_issuer(
        "trusted_issuer.jwks_json",
        'a JWK Set ({"keys": [...]}) with a public RSA (2048+ bits), EC P-256/P-384 or '
        "Ed25519 signing key that has a kid",
    )
