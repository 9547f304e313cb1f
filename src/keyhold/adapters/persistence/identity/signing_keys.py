"""SigningKeyRepository on SQL, private keys sealed at rest, each bound to its key id."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import signing_keys
from keyhold.domain.sealing import Sealer
from keyhold.domain.signing_keys import SigningKey

# pg_advisory_xact_lock key serialising changes to the key ring ("kh-keys").
KEY_RING_LOCK = 0x6B682D6B657973
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def sealing_context(key_id: str) -> str:
    return f"keyhold/signing-key/{key_id}"


class SqlSigningKeyRepository:
    """PEM is ASCII text (RFC 7468): it is sealed and opened as such."""

    def __init__(self, connection: AsyncConnection, sealer: Sealer) -> None:
        self._connection = connection
        self._sealer = sealer

    async def list_verifiable(self, retired_after: datetime) -> list[SigningKey]:
        rows = await self._connection.execute(
            select(signing_keys)
            .where(
                or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > retired_after)
            )
            .order_by(signing_keys.c.created_at)
        )
        return [
            SigningKey(
                key_id=row.key_id,
                algorithm=row.algorithm,
                public_jwk=json.loads(row.public_jwk),
                private_key_pem=self._sealer.open(
                    row.private_key_ciphertext, row.encryption_key_id, sealing_context(row.key_id)
                ).encode("ascii"),
                created_at=row.created_at,
                retired_at=row.retired_at,
            )
            for row in rows
        ]

    async def add(self, key: SigningKey) -> None:
        ciphertext, sealing_key_id = self._sealer.seal(
            key.private_key_pem.decode("ascii"), sealing_context(key.key_id)
        )
        await self._connection.execute(
            signing_keys.insert().values(
                key_id=key.key_id,
                algorithm=key.algorithm,
                public_jwk=json.dumps(key.public_jwk, sort_keys=True),
                private_key_ciphertext=ciphertext,
                encryption_key_id=sealing_key_id,
                created_at=key.created_at,
                retired_at=key.retired_at,
            )
        )

    async def hold_ring(self) -> None:
        """On SQLite, one process serves, and its writes serialise on the database."""
        if self._connection.dialect.name == "postgresql":
            await self._connection.execute(_LOCK, {"key": KEY_RING_LOCK})

    async def retire_active(self, at: datetime) -> None:
        await self._connection.execute(
            update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=at)
        )
