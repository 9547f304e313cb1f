"""Signing keys: the asymmetric keys that sign access tokens and audit checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring. The newest key that is not retired signs; every key that
    may still verify a live token is published."""

    key_id: str
    algorithm: str
    public_jwk: dict[str, str]
    private_key_pem: bytes = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.retired_at is None


class SigningKeyRepository(Protocol):
    """Where the key ring is kept (private keys encrypted at rest by the adapter)."""

    async def list_verifiable(self, retired_after: datetime) -> list[SigningKey]:
        """Keys that are active, or were retired after `retired_after`; oldest first."""
        ...

    async def add(self, key: SigningKey) -> None: ...

    async def hold_ring(self) -> None:
        """Until this unit of work ends, no other one (in any replica) that holds the
        ring changes it: the first key is made once, and rotations do not interleave."""
        ...

    async def retire_active(self, at: datetime) -> None:
        """Mark every active key retired at `at`."""
        ...


class SigningKeyGenerator(Protocol):
    def generate(self, created_at: datetime) -> SigningKey:
        """A fresh key pair with a new random key id."""
        ...
