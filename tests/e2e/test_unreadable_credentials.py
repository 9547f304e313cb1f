"""A sealed secret whose ciphertext was altered in the database (or whose key is gone)
is FAILED_PRECONDITION with CREDENTIAL_UNREADABLE wherever it is read, never INTERNAL,
and the call that found it leaves every row as it was; what needs no secret still works."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Table, select, update

from keyhold.adapters.persistence.tables import connections, providers, signing_keys
from keyhold.provider.v1 import provider_service_pb2 as pb
from tests.e2e.test_providers import REDIRECT, World, provider, refused, world
from tests.support.cli import run_cli
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import running_server, settings_for

__all__ = ["provider", "world"]  # fixtures, used by name

UNREADABLE = (grpc.StatusCode.FAILED_PRECONDITION, "CREDENTIAL_UNREADABLE")


async def _row(world: World, table: Table, key: str) -> dict[str, Any]:
    id_column = next(iter(table.primary_key.columns))
    async with world.app.platform.database.engine.connect() as db:
        row = (await db.execute(select(table).where(id_column == key))).mappings().one()
    return dict(row)


async def _tamper(world: World, table: Table, key: str, column: str) -> None:
    """Flip one bit of the stored ciphertext in `column`."""
    blob: bytes = (await _row(world, table, key))[column]
    id_column = next(iter(table.primary_key.columns))
    async with world.app.platform.database.engine.begin() as db:
        await db.execute(
            update(table)
            .where(id_column == key)
            .values({column: blob[:-1] + bytes([blob[-1] ^ 1])})
        )


def _id(connection: pb.Connection) -> str:
    return connection.name.removeprefix("connections/")


async def test_an_altered_api_key_is_unreadable_and_the_connection_can_still_go(
    world: World,
) -> None:
    await world.stub.CreateProvider(
        pb.CreateProviderRequest(
            provider_id="keys",
            provider=pb.Provider(display_name="K", auth_type=pb.AUTH_TYPE_API_KEY),
        ),
        metadata=world.admin,
    )
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/keys", api_key="k-123"), metadata=world.user
    )
    name = started.connection.name
    await _tamper(world, connections, _id(started.connection), "api_key_ciphertext")
    before = await _row(world, connections, _id(started.connection))
    code, reason, _ = await refused(world.credential(name))
    assert (code, reason) == UNREADABLE
    assert await _row(world, connections, _id(started.connection)) == before
    got = await world.stub.GetConnection(pb.GetConnectionRequest(name=name), metadata=world.user)
    assert got.connection.state == pb.CONNECTION_STATE_ACTIVE
    await world.stub.DeleteConnection(pb.DeleteConnectionRequest(name=name), metadata=world.user)
    async with world.app.platform.database.engine.connect() as db:
        left = await db.execute(
            select(connections).where(connections.c.id == _id(started.connection))
        )
        assert left.first() is None


async def test_an_altered_access_or_refresh_token_is_unreadable_and_nothing_changes(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    key = _id(connection)
    await _tamper(world, connections, key, "access_token_ciphertext")
    before = await _row(world, connections, key)
    code, reason, _ = await refused(world.credential(connection.name))
    assert (code, reason) == UNREADABLE
    code, reason, _ = await refused(  # the refresh reads the refresh token beside it
        world.stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
        )
    )
    assert (code, reason) == UNREADABLE
    assert await _row(world, connections, key) == before
    assert provider.grants["refresh_token"] == 0


async def test_an_altered_client_secret_stops_only_what_needs_it(
    world: World, provider: FakeOAuthProvider
) -> None:
    """Reading a fresh credential and starting a connection need no client secret; the
    code exchange does, and keeps its authorization for once the secret is set again."""
    await world.create_oauth_provider(provider)
    active = await world.connect(provider)
    await _tamper(world, providers, "bank", "secret_ciphertext")
    assert (await world.credential(active.name)).access_token
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    consent = provider.authorize(started.authorization_url)
    complete = pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"])
    pending = await _row(world, connections, _id(started.connection))
    code, reason, _ = await refused(world.stub.CompleteConnection(complete, metadata=world.user))
    assert (code, reason) == UNREADABLE
    assert await _row(world, connections, _id(started.connection)) == pending
    code, reason, _ = await refused(
        world.stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=active.name), metadata=world.user
        )
    )
    assert (code, reason) == UNREADABLE
    await world.stub.UpdateProvider(
        pb.UpdateProviderRequest(
            provider=pb.Provider(name="providers/bank"), client_secret=provider.client_secret
        ),
        metadata=world.admin,
    )
    completed = await world.stub.CompleteConnection(complete, metadata=world.user)
    assert completed.connection.state == pb.CONNECTION_STATE_ACTIVE


async def test_a_vault_reseal_meeting_an_altered_row_names_it_and_changes_nothing(
    tmp_path: Path,
) -> None:
    old = "k1:" + base64.b64encode(os.urandom(32)).decode()
    settings = settings_for(tmp_path, key_encryption_keys=old)
    async with running_server(settings) as (app, channel):
        world = await World(app, channel).setup()
        await world.stub.CreateProvider(
            pb.CreateProviderRequest(
                provider_id="keys",
                provider=pb.Provider(display_name="K", auth_type=pb.AUTH_TYPE_API_KEY),
            ),
            metadata=world.admin,
        )
        started = await world.stub.StartConnection(
            pb.StartConnectionRequest(provider="providers/keys", api_key="k-123"),
            metadata=world.user,
        )
        await _tamper(world, connections, _id(started.connection), "api_key_ciphertext")
        before = await _key_ids(world)
    both = old + ",k2:" + base64.b64encode(os.urandom(32)).decode()
    env = {**os.environ, "KEYHOLD_DATA_DIR": str(tmp_path), "KEYHOLD_KEY_ENCRYPTION_KEYS": both}
    code, out = await run_cli("keys", "rotate-vault", env=env)
    assert code == 2, out
    assert "CREDENTIAL_UNREADABLE" in out
    assert f"table connections, id {_id(started.connection)}" in out
    assert "Traceback" not in out
    async with running_server(settings_for(tmp_path, key_encryption_keys=both)) as (app, channel):
        assert await _key_ids(World(app, channel)) == before == {"k1"}


async def _key_ids(world: World) -> set[str]:
    async with world.app.platform.database.engine.connect() as db:
        sealed = select(connections.c.credential_key_id).union(
            select(signing_keys.c.encryption_key_id), select(providers.c.secret_key_id)
        )
        return {key_id for key_id in (await db.execute(sealed)).scalars() if key_id}
