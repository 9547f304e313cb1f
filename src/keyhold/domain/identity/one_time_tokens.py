"""Single-use, expiring tokens for email verification and password reset. Only their
SHA-256 is stored."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Protocol


class TokenPurpose(enum.Enum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"


class OneTimeTokenRepository(Protocol):
    async def add(
        self, token_hash: bytes, user_id: str, purpose: TokenPurpose, expires_at: datetime
    ) -> None: ...

    async def peek(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        """The user id of an unused, unexpired token, without using it."""
        ...

    async def consume(self, token_hash: bytes, purpose: TokenPurpose, now: datetime) -> str | None:
        """Use the token once: its user id, or None if unknown, used or expired."""
        ...
