"""SigningKeyRepository in memory."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from keyhold.domain.signing_keys import SigningKey
from tests.support.fakes.store import Transaction


class InMemorySigningKeyRepository:
    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def list_verifiable(self, retired_after: datetime) -> list[SigningKey]:
        keys = [
            key
            for key in self._tx.signing_keys.values()
            if key.retired_at is None or key.retired_at > retired_after
        ]
        return sorted(keys, key=lambda key: key.created_at)

    async def add(self, key: SigningKey) -> None:
        self._tx.signing_keys.insert(key.key_id, key)

    async def hold_ring(self) -> None:
        """Nothing to hold: the fake serves one process, which changes the ring in turn."""

    async def retire_active(self, at: datetime) -> None:
        for key_id, key in self._tx.signing_keys.where(lambda key: key.is_active):
            self._tx.signing_keys.put(key_id, replace(key, retired_at=at))
