"""Secrets the service generates itself (refresh, verification and reset tokens): 256
random bits, stored only as SHA-256. A slow KDF would add nothing at that entropy."""

from __future__ import annotations

import hashlib
import secrets

REFRESH_TOKEN_PREFIX = "khr_"
VERIFICATION_TOKEN_PREFIX = "khv_"
RESET_TOKEN_PREFIX = "khp_"
MAX_SECRET_LENGTH = 256


def new_secret(prefix: str) -> tuple[str, bytes]:
    """A fresh secret (prefixed, so secret scanners can spot leaks) and its hash."""
    token = prefix + secrets.token_urlsafe(32)
    return token, secret_hash(token)


def secret_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
