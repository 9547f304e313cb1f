"""OneTimeTokenRepository in memory."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from keyhold.domain.identity.one_time_tokens import TokenPurpose
from tests.support.fakes.store import IntegrityViolation, OneTimeTokenRow, Transaction


class InMemoryOneTimeTokenRepository:
    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def add(
        self, token_hash: bytes, user_id: str, purpose: TokenPurpose, expires_at: datetime
    ) -> None:
        if user_id not in self._tx.users:
            raise IntegrityViolation(f"no user {user_id!r} for a one-time token")
        self._tx.one_time_tokens.insert(token_hash, OneTimeTokenRow(user_id, purpose, expires_at))

    def _usable(
        self, token_hash: bytes, purpose: TokenPurpose, now: datetime
    ) -> OneTimeTokenRow | None:
        row = self._tx.one_time_tokens.get(token_hash)
        if row is None or row.purpose is not purpose or row.used_at is not None:
            return None
        return row if row.expires_at > now else None

    async def peek(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        row = self._usable(token_hash, purpose, now)
        return row.user_id if row else None

    async def consume(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        row = self._usable(token_hash, purpose, now)
        if row is None:
            return None
        self._tx.one_time_tokens.put(token_hash, replace(row, used_at=now))
        return row.user_id
