"""ProviderService end to end against a real OAuth 2.0 provider stand-in on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text, update

from keyhold.adapters.persistence.tables import connections
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.provider.v1 import provider_service_pb2 as pb
from keyhold.provider.v1 import provider_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import bearer, running_server, service_token, settings_for, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
REDIRECT = "https://app.example.com/callback"


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as running:
        yield running


class World:
    def __init__(self, app: KeyholdServer, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.stub = pb_grpc.ProviderServiceStub(channel)
        self.channel = channel
        self.admin = ()  # type: tuple[tuple[str, str], ...]
        self.user = ()  # type: tuple[tuple[str, str], ...]
        self.reader = ()  # type: tuple[tuple[str, str], ...]

    async def setup(self) -> World:
        self.admin = bearer((await signed_in(self.app, "admin@example.com", ("admin", "user")))[0])
        self.user = bearer((await signed_in(self.app, "ada@example.com"))[0])
        self.reader = bearer(await service_token(self.app, ("provider.credentials.read",)))
        return self

    async def create_oauth_provider(
        self, fake: FakeOAuthProvider, slug: str = "bank"
    ) -> pb.Provider:
        created = await self.stub.CreateProvider(
            pb.CreateProviderRequest(
                provider_id=slug,
                provider=pb.Provider(
                    display_name="Bank",
                    auth_type=pb.AUTH_TYPE_OAUTH2,
                    authorization_endpoint=fake.authorization_endpoint,
                    token_endpoint=fake.token_endpoint,
                    revocation_endpoint=fake.revocation_endpoint,
                    client_id=fake.client_id,
                    default_scopes=["accounts", "balances"],
                    redirect_uris=[REDIRECT],
                ),
                client_secret=fake.client_secret or "",
            ),
            metadata=self.admin,
        )
        return created.provider

    async def connect(self, fake: FakeOAuthProvider, slug: str = "bank") -> pb.Connection:
        started = await self.stub.StartConnection(
            pb.StartConnectionRequest(provider=f"providers/{slug}", redirect_uri=REDIRECT),
            metadata=self.user,
        )
        assert started.connection.state == pb.CONNECTION_STATE_PENDING
        consent = fake.authorize(started.authorization_url)
        completed = await self.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
            metadata=self.user,
        )
        return completed.connection

    async def credential(self, name: str) -> pb.GetConnectionCredentialResponse:
        return await self.stub.GetConnectionCredential(
            pb.GetConnectionCredentialRequest(name=name), metadata=self.reader
        )


@pytest.fixture
async def world(server: Server) -> World:
    return await World(*server).setup()


async def refused(call: object) -> tuple[grpc.StatusCode, str | None, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    return error.code, error.reason, dict(error.error_info.metadata) if error.error_info else {}


async def test_catalog_rules(world: World, provider: FakeOAuthProvider) -> None:
    created = await world.create_oauth_provider(provider)
    assert created.name == "providers/bank"
    assert created.has_client_secret
    listed = await world.stub.ListProviders(pb.ListProvidersRequest(), metadata=world.user)
    assert [p.name for p in listed.providers] == ["providers/bank"]
    code, reason, _ = await refused(
        world.stub.CreateProvider(
            pb.CreateProviderRequest(
                provider_id="plain",
                provider=pb.Provider(
                    display_name="Plain",
                    auth_type=pb.AUTH_TYPE_OAUTH2,
                    authorization_endpoint="http://bank.example.com/authorize",
                    token_endpoint="https://bank.example.com/token",
                    client_id="x",
                ),
            ),
            metadata=world.admin,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "URL_NOT_ALLOWED")
    code, reason, _ = await refused(
        world.stub.CreateProvider(
            pb.CreateProviderRequest(provider_id="x1", provider=created), metadata=world.user
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    updated = await world.stub.UpdateProvider(
        pb.UpdateProviderRequest(
            provider=pb.Provider(name="providers/bank", display_name="Big Bank"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        metadata=world.admin,
    )
    assert updated.provider.display_name == "Big Bank"
    await world.connect(provider)
    code, reason, _ = await refused(
        world.stub.DeleteProvider(
            pb.DeleteProviderRequest(name="providers/bank"), metadata=world.admin
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_IN_USE")
    async with world.app.platform.database.engine.connect() as connection:
        names = (await connection.execute(text("SELECT slug FROM providers"))).scalars().all()
    assert names == ["bank"]


async def test_oauth_flow_with_pkce_and_an_audited_credential_read(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    assert connection.state == pb.CONNECTION_STATE_ACTIVE
    assert list(connection.scopes) == ["accounts", "balances"]
    assert connection.expire_time.seconds > time.time() + 3000
    exchange = provider.last_token_request
    assert exchange is not None
    assert exchange.form["grant_type"] == "authorization_code"
    assert exchange.form["redirect_uri"] == REDIRECT
    assert 43 <= len(exchange.form["code_verifier"]) <= 128
    credential = await world.credential(connection.name)
    assert credential.access_token == provider.issued_access_tokens[-1]
    assert credential.auth_type == pb.AUTH_TYPE_OAUTH2
    assert provider.grants["refresh_token"] == 0  # fresh: no refresh needed
    async with world.app.platform.database.engine.connect() as db:
        reads = (
            await db.execute(
                text(
                    "SELECT actor_type, outcome FROM audit_events "
                    "WHERE action = 'provider.credential.read' AND resource_name = :n"
                ),
                {"n": connection.name},
            )
        ).all()
    assert [tuple(r) for r in reads] == [("service", "attempted"), ("service", "succeeded")]


async def test_wrong_reused_and_expired_states_fail_precondition(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    consent = provider.authorize(started.authorization_url)
    code, reason, _ = await refused(
        world.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state="wrong", code=consent["code"]), metadata=world.user
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_INVALID")
    request = pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"])
    await world.stub.CompleteConnection(request, metadata=world.user)
    code, reason, _ = await refused(world.stub.CompleteConnection(request, metadata=world.user))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_INVALID")
    again = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    late = provider.authorize(again.authorization_url)
    async with world.app.platform.database.engine.begin() as db:
        await db.execute(
            update(connections)
            .where(connections.c.id == again.connection.name.removeprefix("connections/"))
            .values(authorize_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    code, reason, _ = await refused(
        world.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state=late["state"], code=late["code"]),
            metadata=world.user,
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_INVALID")


async def test_provider_errors_and_outages_surface_with_their_codes(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    consent = provider.authorize(started.authorization_url)
    provider.fail_next("token", status=400, error="invalid_grant")
    code, reason, metadata = await refused(
        world.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
            metadata=world.user,
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_REJECTED")
    assert metadata == {"oauth_error": "invalid_grant"}
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    consent = provider.authorize(started.authorization_url)
    provider.fail_next("token", status=503, count=3)  # every attempt of the retry budget
    code, reason, _ = await refused(
        world.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
            metadata=world.user,
        )
    )
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")


async def _expire(app: KeyholdServer, name: str) -> None:
    async with app.platform.database.engine.begin() as db:
        await db.execute(
            update(connections)
            .where(connections.c.id == name.removeprefix("connections/"))
            .values(expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_fifty_reads_of_an_expired_connection_make_one_refresh(
    tmp_path: Path, provider: FakeOAuthProvider, engine: str
) -> None:
    async with (
        contextlib_stack(engine) as url,
        running_server(settings_for(tmp_path, url, rate_limits_enabled=False)) as (app, channel),
    ):
        world = await World(app, channel).setup()
        await world.create_oauth_provider(provider)
        connection = await world.connect(provider)
        await _expire(app, connection.name)
        answers = await asyncio.gather(*(world.credential(connection.name) for _ in range(50)))
        assert provider.grants["refresh_token"] == 1
        fresh = provider.issued_access_tokens[-1]
        assert {answer.access_token for answer in answers} == {fresh}
        assert provider.is_active(fresh)


def contextlib_stack(engine: str):  # type: ignore[no-untyped-def]
    import contextlib

    @contextlib.asynccontextmanager
    async def database() -> AsyncIterator[str | None]:
        if engine == "sqlite":
            yield None
        else:
            async with postgres_database() as url:
                yield url

    return database()


async def test_invalid_grant_on_refresh_needs_reauthorization(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    provider.answer_invalid_grant_to_refresh()
    code, reason, metadata = await refused(
        world.stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REFRESH_REJECTED")
    assert metadata["oauth_error"] == "invalid_grant"
    got = await world.stub.GetConnection(
        pb.GetConnectionRequest(name=connection.name), metadata=world.user
    )
    assert got.connection.state == pb.CONNECTION_STATE_NEEDS_REAUTH
    code, reason, _ = await refused(world.credential(connection.name))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONNECTION_NEEDS_REAUTH")


async def test_refresh_connection_rotates_upstream_tokens(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    first = (await world.credential(connection.name)).access_token
    refreshed = await world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    assert refreshed.connection.last_refresh_time.seconds >= connection.last_refresh_time.seconds
    second = (await world.credential(connection.name)).access_token
    assert second != first
    assert provider.grants["refresh_token"] == 1


async def test_api_key_connections(world: World) -> None:
    await world.stub.CreateProvider(
        pb.CreateProviderRequest(
            provider_id="broker",
            provider=pb.Provider(display_name="Broker", auth_type=pb.AUTH_TYPE_API_KEY),
        ),
        metadata=world.admin,
    )
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/broker", api_key="broker-key-123456"),
        metadata=world.user,
    )
    assert started.connection.state == pb.CONNECTION_STATE_ACTIVE
    assert started.authorization_url == ""
    credential = await world.credential(started.connection.name)
    assert (credential.access_token, credential.auth_type) == (
        "broker-key-123456",
        pb.AUTH_TYPE_API_KEY,
    )
    code, reason, _ = await refused(
        world.stub.StartConnection(
            pb.StartConnectionRequest(provider="providers/broker"), metadata=world.user
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "API_KEY_INVALID")


async def test_connections_are_visible_to_their_owner_only(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    stranger = bearer((await signed_in(world.app, "eve@example.com"))[0])
    code, reason, _ = await refused(
        world.stub.GetConnection(pb.GetConnectionRequest(name=connection.name), metadata=stranger)
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_RESOURCE_OWNER")
    listed = await world.stub.ListConnections(
        pb.ListConnectionsRequest(parent="users/me"), metadata=world.user
    )
    assert [c.name for c in listed.connections] == [connection.name]


async def test_delete_revokes_upstream_and_wipes_credentials(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    refresh_token = provider.issued_refresh_tokens[-1]
    await world.stub.DeleteConnection(
        pb.DeleteConnectionRequest(name=connection.name), metadata=world.user
    )
    revoke = provider.last_revoke_request
    assert revoke is not None
    assert revoke.form["token"] == refresh_token
    assert not provider.is_refresh_token_active(refresh_token)
    async with world.app.platform.database.engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM connections"))).scalar_one() == 0
        details = (
            await db.execute(
                text(
                    "SELECT details FROM audit_events WHERE action = "
                    "'provider.connection.delete' AND outcome = 'succeeded'"
                )
            )
        ).scalar_one()
    assert '"upstream_revoked": "true"' in details


async def test_no_plaintext_secret_anywhere_in_the_database(
    world: World, provider: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    await world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    await world.stub.CreateProvider(
        pb.CreateProviderRequest(
            provider_id="broker",
            provider=pb.Provider(display_name="Broker", auth_type=pb.AUTH_TYPE_API_KEY),
        ),
        metadata=world.admin,
    )
    await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/broker", api_key="the-secret-api-key-42"),
        metadata=world.user,
    )
    assert provider.last_token_request is not None
    secrets = [
        provider.client_secret or "",
        "the-secret-api-key-42",
        *provider.issued_access_tokens,
        *provider.issued_refresh_tokens,
    ]
    first_exchange = next(r for r in provider.history if r.form.get("code_verifier"))
    secrets.append(first_exchange.form["code_verifier"])
    chunks: list[bytes] = []
    async with world.app.platform.database.engine.connect() as db:
        tables = [
            "providers",
            "connections",
            "audit_events",
            "users",
            "sessions",
            "signing_keys",
            "service_accounts",
            "refresh_tokens",
        ]
        for table in tables:
            for row in await db.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    dump = b"\x00".join(chunks)
    assert len(secrets) >= 6
    for secret in secrets:
        assert secret.encode() not in dump, secret[:6]


async def test_a_failing_provider_opens_its_breaker_and_other_rpcs_carry_on(
    tmp_path: Path, provider: FakeOAuthProvider
) -> None:
    settings = settings_for(
        tmp_path,
        provider_retries=0,
        provider_timeout_seconds=1.0,
        provider_breaker_threshold=2,
        provider_breaker_cooldown_seconds=60,
    )
    async with running_server(settings) as (app, channel):
        world = await World(app, channel).setup()
        await world.create_oauth_provider(provider)
        connection = await world.connect(provider)
        provider.stall("token", seconds=3)
        for _ in range(2):
            code, reason, _ = await refused(
                world.stub.RefreshConnection(
                    pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
                )
            )
            assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
        tried = provider.requests["token"]
        started = time.monotonic()
        code, _, _ = await refused(
            world.stub.RefreshConnection(
                pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
            )
        )
        assert code is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 0.5  # refused at once: the circuit is open
        assert provider.requests["token"] == tried
        who = await identity_grpc.IdentityServiceStub(channel).WhoAmI(
            identity_pb.WhoAmIRequest(), metadata=world.user
        )
        assert who.subject.startswith("users/")
        provider.reset_faults()


async def test_every_provider_rpc_is_audited(world: World, provider: FakeOAuthProvider) -> None:
    await world.create_oauth_provider(provider)
    connection = await world.connect(provider)
    await world.stub.ListProviders(pb.ListProvidersRequest(), metadata=world.user)
    await world.stub.GetConnection(
        pb.GetConnectionRequest(name=connection.name), metadata=world.user
    )
    await world.stub.ListConnections(
        pb.ListConnectionsRequest(parent="users/me"), metadata=world.user
    )
    await world.credential(connection.name)
    async with world.app.platform.database.engine.connect() as db:
        actions = set(
            (await db.execute(text("SELECT action FROM audit_events WHERE outcome = 'succeeded'")))
            .scalars()
            .all()
        )
    assert {
        "provider.provider.create",
        "provider.connection.start",
        "provider.connection.complete",
        "provider.providers.list",
        "provider.connection.get",
        "provider.connections.list",
        "provider.credential.read",
    } <= actions


async def test_rotate_vault_reseals_everything_under_the_newest_key(
    tmp_path: Path, provider: FakeOAuthProvider
) -> None:
    import base64
    import os

    from keyhold.adapters.crypto.aead import AeadKeyRing
    from keyhold.adapters.crypto.sealer import AeadSealer
    from keyhold.adapters.persistence.vault_rotation import reseal_all
    from keyhold.server import build_server

    old = "k1:" + base64.b64encode(os.urandom(32)).decode()
    async with running_server(settings_for(tmp_path, key_encryption_keys=old)) as (app, channel):
        world = await World(app, channel).setup()
        await world.create_oauth_provider(provider)
        connection = await world.connect(provider)
    both = old + ",k2:" + base64.b64encode(os.urandom(32)).decode()
    rotated = await build_server(settings_for(tmp_path, key_encryption_keys=both))
    try:
        assert await rotated.vault.reseal() >= 3  # signing key, provider, connection
        sealer = AeadSealer(AeadKeyRing.parse(both))
        assert await reseal_all(rotated.platform.database, sealer) == 0  # nothing left under k1
        done = await rotated.audit.trail.head()  # the reseal's outcome, after its attempt
        assert done is not None
        assert (done.record.action, done.record.outcome.value) == (
            "security.vault.reseal",
            "succeeded",
        )
        assert int(done.record.details["resealed_rows"]) >= 3
        async with rotated.platform.database.engine.connect() as db:
            key_ids = set(
                (await db.execute(text("SELECT credential_key_id FROM connections"))).scalars()
            ) | set(
                (await db.execute(text("SELECT encryption_key_id FROM signing_keys"))).scalars()
            )
        assert key_ids == {"k2"}
    finally:
        await rotated.platform.database.dispose()
        rotated.identity.hasher.close()
        await rotated.providers.oauth.close()
    only_new = "k2:" + both.rpartition("k2:")[2]
    async with running_server(settings_for(tmp_path, key_encryption_keys=only_new)) as (app, ch):
        reader = bearer(await service_token(app, ("provider.credentials.read",)))
        credential = await pb_grpc.ProviderServiceStub(ch).GetConnectionCredential(
            pb.GetConnectionCredentialRequest(name=connection.name), metadata=reader
        )
        assert credential.access_token == provider.issued_access_tokens[-1]
