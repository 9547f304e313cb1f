"""Values sealed at rest before the repositories sealed through the Sealer port still
open: the ciphertexts below were made by the repositories as they were then (key ring,
associated data), and the rows holding them are read through today's repositories."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.identity.signing_keys import SqlSigningKeyRepository
from keyhold.adapters.persistence.provider.connections import SqlConnectionRepository
from keyhold.adapters.persistence.tables import connections, metadata, signing_keys
from keyhold.domain.provider.connections import Credentials
from keyhold.domain.sealing import SealedValueUnreadable

SEALER = AeadSealer(AeadKeyRing.parse("k1:" + base64.b64encode(bytes(range(32))).decode()))
PEM = b"-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n"
SEALED_PEM = bytes.fromhex(
    "4feff0c9974264dad9b33190937da9105503bdc379a804734476b013a611389987d9409bf663685ac959"
    "5bdfff44d919e29713ba51a7821bb97260842cb8979cf176453eb4fa656071036eeff4ca295cdaa3bb84"
    "c01580d724e419d0d78db382ee"
)
SEALED_CREDENTIALS = {
    "access_token_ciphertext": (
        "ddba69e4d2d9bbec908a38344af845118b0d54bfa4e0ab0bdee9f81c0bb04ffbfa385b5113"
    ),
    "refresh_token_ciphertext": (
        "ee265f0732c5d4cb4bc94f9e45bf891ba1663d6219e4c247e0ae534171182a4fc765a1ebae"
    ),
    "api_key_ciphertext": (
        "b14c0b961e98aa49d23b879afada5f4fceb6261ae5ad357707d6220a92ac0cde487bb8ca6e"
    ),
    "verifier_ciphertext": (
        "0c44c5c413e75888bf5c306918f5b851a24e1e3ade1a3d66c2769846459be832544123dc"
    ),
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def connection(tmp_path: Path) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'sealed.db'}")
    try:
        async with engine.begin() as db:
            await db.run_sync(metadata.create_all)
            yield db
    finally:
        await engine.dispose()


async def _store_signing_key(db: AsyncConnection, key_id: str) -> None:
    await db.execute(
        signing_keys.insert().values(
            key_id=key_id,
            algorithm="ES256",
            public_jwk="{}",
            private_key_ciphertext=SEALED_PEM,
            encryption_key_id="k1",
            created_at=NOW,
        )
    )


async def _store_connection(db: AsyncConnection, connection_id: str) -> None:
    await db.execute(
        connections.insert().values(
            id=connection_id,
            user_id="u-1",
            provider="p",
            state="pending",
            scopes="[]",
            created_at=NOW,
            updated_at=NOW,
            state_hash=b"state-" + connection_id.encode(),
            redirect_uri="https://app.example/callback",
            authorize_expires_at=NOW + timedelta(minutes=5),
            credential_key_id="k1",
            **{column: bytes.fromhex(blob) for column, blob in SEALED_CREDENTIALS.items()},
        )
    )


async def test_a_signing_key_sealed_before_still_opens(connection: AsyncConnection) -> None:
    await _store_signing_key(connection, "sk-1")
    [key] = await SqlSigningKeyRepository(connection, SEALER).list_verifiable(NOW)
    assert key.private_key_pem == PEM


async def test_connection_secrets_sealed_before_still_open(connection: AsyncConnection) -> None:
    await _store_connection(connection, "c-1")
    repository = SqlConnectionRepository(connection, SEALER)
    assert await repository.credentials("c-1") == Credentials("at-secret", "rt-secret", "ak-secret")
    found = await repository.pending(b"state-c-1")
    assert found is not None
    assert found[1].code_verifier == "v-secret"


async def test_sealed_values_are_bound_to_their_row(connection: AsyncConnection) -> None:
    """Moved to another row, the same ciphertexts do not open."""
    await _store_signing_key(connection, "sk-2")
    await _store_connection(connection, "c-2")
    with pytest.raises(SealedValueUnreadable):
        await SqlSigningKeyRepository(connection, SEALER).list_verifiable(NOW)
    with pytest.raises(SealedValueUnreadable):
        await SqlConnectionRepository(connection, SEALER).credentials("c-2")
