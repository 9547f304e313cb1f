"""Public keys of service accounts, read from JWKs with PyJWT: only the public half of
an EdDSA (Ed25519), ES256 (P-256) or RS256 (at least 2048 bits) key, with a `kid`."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from keyhold.domain.identity.account_keys import KEY_ID, PublicKey, key_invalid

ALGORITHMS = {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA"}
# Members that only a private or symmetric key has (RFC 7518 §6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048


class JwkPublicKeys:
    def read(self, jwk_text: str) -> PublicKey:
        try:
            jwk: Any = json.loads(jwk_text)
        except ValueError:
            raise key_invalid("public_jwk is not JSON") from None
        if not isinstance(jwk, dict):
            raise key_invalid("public_jwk is not a JSON object")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise key_invalid("public_jwk holds a private or symmetric key: send the public half")
        key_id, algorithm = jwk.get("kid"), jwk.get("alg")
        if not isinstance(key_id, str) or not KEY_ID.match(key_id):
            raise key_invalid("public_jwk needs a kid of 1 to 128 of A-Z a-z 0-9 . _ -")
        if algorithm not in ALGORITHMS or jwk.get("kty") != ALGORITHMS[algorithm]:
            raise key_invalid("public_jwk must be an EdDSA (OKP), ES256 (EC) or RS256 (RSA) key")
        try:
            parsed = jwt.PyJWK(jwk)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise key_invalid("public_jwk does not describe a valid key") from None
        if jwk.get("crv", "") != {"EdDSA": "Ed25519", "ES256": "P-256"}.get(algorithm, ""):
            raise key_invalid("an EdDSA key must be on Ed25519, an ES256 key on P-256")
        if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < _MIN_RSA_BITS:
            raise key_invalid(f"an RS256 key needs at least {_MIN_RSA_BITS} bits")
        kept = {name: value for name, value in jwk.items() if name in _PUBLIC_MEMBERS}
        return PublicKey(key_id, algorithm, json.dumps(kept, sort_keys=True))


_PUBLIC_MEMBERS = frozenset({"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"})
