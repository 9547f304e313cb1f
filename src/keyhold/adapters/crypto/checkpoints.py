"""Audit checkpoints signed as JWS with the token-signing key, so anyone holding the
JWKS (GetJwks) can verify them."""

from __future__ import annotations

import jwt

from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.jose_canonical import with_low_s

CHECKPOINT_TYPE = "keyhold-audit-checkpoint+jwt"


class JwsCheckpointSigner:
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def sign(self, claims: dict[str, object]) -> tuple[str, str]:
        signer = self._ring.signer
        token = jwt.encode(
            claims,
            signer.private_key,
            algorithm=signer.algorithm,
            headers={"kid": signer.key_id, "typ": CHECKPOINT_TYPE},
        )
        return with_low_s(token), signer.key_id
