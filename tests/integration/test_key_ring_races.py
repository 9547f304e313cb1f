"""The key ring under concurrency on PostgreSQL, as when replicas start together on an
empty database or two operators rotate at once: there is always exactly one active
(signing) key."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.migrate import migrate
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWorkFactory
from keyhold.application.identity.signing_keys import SigningKeys
from keyhold.domain.clock import SystemClock
from keyhold.wiring.platform import signing_keys_for
from tests.support.databases import postgres_database
from tests.support.engines import engine_for
from tests.support.servers import settings_for

pytestmark = pytest.mark.postgres

REPLICAS = 4


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[SigningKeys]]:
    """One `SigningKeys` per replica, each on a database pool of its own."""
    key = base64.b64encode(os.urandom(32)).decode()
    async with postgres_database() as url:
        settings = settings_for(tmp_path, url)
        sealer = AeadSealer(AeadKeyRing.parse(f"k1:{key}"))
        databases = [Database(engine_for(settings)) for _ in range(REPLICAS)]
        await migrate(databases[0].engine)
        try:
            yield [
                signing_keys_for(settings, SqlUnitOfWorkFactory(database, sealer), SystemClock())
                for database in databases
            ]
        finally:
            for database in databases:
                await database.dispose()


async def test_replicas_starting_together_make_one_first_key(
    replicas: list[SigningKeys],
) -> None:
    for replica in replicas:  # connected and idle, so that they start on equal terms
        assert await replica.verifiable() == []
    rings = await asyncio.gather(*(replica.ensure_signer() for replica in replicas))
    assert [[key.key_id for key in ring if key.is_active] for ring in rings] == [
        [rings[0][0].key_id]
    ] * REPLICAS
    assert len(await replicas[0].verifiable()) == 1


async def test_concurrent_rotations_leave_one_active_key(replicas: list[SigningKeys]) -> None:
    await replicas[0].ensure_signer()
    rotated = await asyncio.gather(*(replica.rotate() for replica in replicas))
    active = [key for key in await replicas[0].verifiable() if key.is_active]
    assert len(active) == 1
    assert active[0].key_id in {key.key_id for key in rotated}
