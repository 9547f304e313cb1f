"""A password hasher for tests: deterministic and instant, and NOT a password hash."""

from __future__ import annotations

import hashlib
import hmac


class FakePasswordHasher:
    """`{scheme}${sha256 hex}`. A hash of another scheme verifies too, and needs a
    rehash: a hasher made with another `scheme` plays the outdated parameters."""

    def __init__(self, scheme: str = "fake") -> None:
        self.scheme = scheme
        self.hashed = 0
        self.verified = 0
        self.dummy_verified = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return self._hash(self.scheme, password)

    @staticmethod
    def _hash(scheme: str, password: str) -> str:
        return f"{scheme}${hashlib.sha256(password.encode()).hexdigest()}"

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verified += 1
        scheme, _, _ = password_hash.partition("$")
        return hmac.compare_digest(password_hash, self._hash(scheme, password))

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(self.scheme + "$")

    async def verify_dummy(self, password: str) -> None:
        self.dummy_verified += 1
