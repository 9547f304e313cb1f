"""OneTimeTokenRepository on SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import one_time_tokens
from keyhold.domain.identity.one_time_tokens import TokenPurpose


class SqlOneTimeTokenRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(
        self, token_hash: bytes, user_id: str, purpose: TokenPurpose, expires_at: datetime
    ) -> None:
        await self._connection.execute(
            one_time_tokens.insert().values(
                token_hash=token_hash,
                user_id=user_id,
                purpose=purpose.value,
                created_at=datetime.now(expires_at.tzinfo),
                expires_at=expires_at,
            )
        )

    def _usable(self, token_hash: bytes, purpose: TokenPurpose, now: datetime):  # type: ignore[no-untyped-def]
        c = one_time_tokens.c
        return (
            c.token_hash == token_hash,
            c.purpose == purpose.value,
            c.used_at.is_(None),
            c.expires_at > now,
        )

    async def peek(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        user_id: str | None = await self._connection.scalar(
            select(one_time_tokens.c.user_id).where(*self._usable(token_hash, purpose, now))
        )
        return user_id

    async def consume(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        result = await self._connection.execute(
            update(one_time_tokens)
            .where(*self._usable(token_hash, purpose, now))
            .values(used_at=now)
            .returning(one_time_tokens.c.user_id)
        )
        row = result.first()
        return row.user_id if row else None
