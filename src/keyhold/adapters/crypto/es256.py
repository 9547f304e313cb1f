"""ES256 (ECDSA P-256, SHA-256) signing keys: generation and JWK export."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyhold.domain.signing_keys import SigningKey

ALGORITHM = "ES256"


def _b64url(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(key_id: str, public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x),
        "y": _b64url(numbers.y),
        "kid": key_id,
        "alg": ALGORITHM,
        "use": "sig",
    }


class Es256KeyGenerator:
    def generate(self, created_at: datetime) -> SigningKey:
        private_key = ec.generate_private_key(ec.SECP256R1())
        key_id = secrets.token_urlsafe(12)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return SigningKey(
            key_id=key_id,
            algorithm=ALGORITHM,
            public_jwk=public_jwk(key_id, private_key.public_key()),
            private_key_pem=pem,
            created_at=created_at,
        )
