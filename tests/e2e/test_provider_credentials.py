"""Provider connections under a hostile or careless upstream and admin: stored credentials
go only to the origin they were issued for, redirect URIs come from an exact allowlist,
scopes are bounded, and no token endpoint answer leaves a connection broken or stuck."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from keyhold.provider.v1 import provider_service_pb2 as pb
from keyhold.server import KeyholdServer
from tests.e2e.test_providers import REDIRECT, World
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import RichError, rich_error

YEAR = 366 * 24 * 3600
MOVED_PATHS = ["authorization_endpoint", "token_endpoint", "revocation_endpoint"]


@pytest.fixture
def bank() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as running:
        yield running


@pytest.fixture
def elsewhere() -> Iterator[FakeOAuthProvider]:
    """Another host: the same client id, its own secret."""
    with FakeOAuthProvider(client_secret="elsewhere-secret") as running:
        yield running


@pytest.fixture
async def world(server: tuple[KeyholdServer, grpc.aio.Channel]) -> World:
    return await World(*server).setup()


@pytest.fixture
async def any_world(any_server: tuple[KeyholdServer, grpc.aio.Channel]) -> World:
    """On SQLite, then on PostgreSQL."""
    return await World(*any_server).setup()


async def failure(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


def fields(error: RichError) -> list[str]:
    assert error.bad_request is not None, error
    return [violation.field for violation in error.bad_request.field_violations]


async def state_of(world: World, name: str) -> int:
    got = await world.stub.GetConnection(pb.GetConnectionRequest(name=name), metadata=world.user)
    return got.connection.state


def move_to(fake: FakeOAuthProvider, secret: str = "") -> pb.UpdateProviderRequest:
    return pb.UpdateProviderRequest(
        provider=pb.Provider(
            name="providers/bank",
            authorization_endpoint=fake.authorization_endpoint,
            token_endpoint=fake.token_endpoint,
            revocation_endpoint=fake.revocation_endpoint,
        ),
        update_mask=FieldMask(paths=MOVED_PATHS),
        client_secret=secret,
    )


def sent_anywhere(fake: FakeOAuthProvider) -> str:
    return "\n".join(f"{r.path} {r.authorization} {sorted(r.form.items())}" for r in fake.history)


# -- credentials bound to their origin ---------------------------------------------------


async def test_moving_the_token_endpoint_without_the_new_client_secret_is_refused(
    world: World, bank: FakeOAuthProvider, elsewhere: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(bank)
    connection = await world.connect(bank)
    error = await failure(world.stub.UpdateProvider(move_to(elsewhere), metadata=world.admin))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CLIENT_SECRET_REQUIRED",
    )
    listed = await world.stub.ListProviders(pb.ListProvidersRequest(), metadata=world.user)
    assert listed.providers[0].token_endpoint == bank.token_endpoint  # nothing changed
    assert await state_of(world, connection.name) == pb.CONNECTION_STATE_ACTIVE
    await world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    assert sum(elsewhere.requests.values()) == 0


async def test_moving_the_token_endpoint_sends_no_stored_credential_to_the_new_host(
    any_world: World, bank: FakeOAuthProvider, elsewhere: FakeOAuthProvider
) -> None:
    world = any_world
    await world.create_oauth_provider(bank)
    connection = await world.connect(bank)
    refresh_token = bank.issued_refresh_tokens[-1]
    await world.stub.UpdateProvider(move_to(elsewhere, "elsewhere-secret"), metadata=world.admin)
    assert await state_of(world, connection.name) == pb.CONNECTION_STATE_NEEDS_REAUTH
    refresh = world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    for call in (refresh, world.credential(connection.name)):
        error = await failure(call)
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CONNECTION_NEEDS_REAUTH",
        )
    await world.stub.DeleteConnection(
        pb.DeleteConnectionRequest(name=connection.name), metadata=world.user
    )
    assert sum(elsewhere.requests.values()) == 0  # no refresh, no revocation, nothing
    again = await world.connect(elsewhere)  # the users connect again, to the new host
    assert again.state == pb.CONNECTION_STATE_ACTIVE
    seen = sent_anywhere(elsewhere)
    assert refresh_token not in seen
    assert bank.client_secret is not None
    assert bank.client_secret not in seen
    assert "elsewhere-secret" in seen
    async with world.app.platform.database.engine.connect() as db:
        details = (
            await db.execute(
                text(
                    "SELECT details FROM audit_events WHERE action = 'provider.provider.update' "
                    "AND outcome = 'succeeded'"
                )
            )
        ).scalar_one()
    assert '"token_origin_changed": "true"' in details
    assert '"connections_needing_reauth": "1"' in details


async def test_moved_connections_lose_their_tokens_at_rest(
    any_world: World, bank: FakeOAuthProvider, elsewhere: FakeOAuthProvider
) -> None:
    world = any_world
    await world.create_oauth_provider(bank)
    connection = await world.connect(bank)
    pending = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    consent = bank.authorize(pending.authorization_url)
    await world.stub.UpdateProvider(move_to(elsewhere, "elsewhere-secret"), metadata=world.admin)
    async with world.app.platform.database.engine.connect() as db:
        rows = (
            await db.execute(
                text(
                    "SELECT state, access_token_ciphertext, refresh_token_ciphertext, "
                    "verifier_ciphertext FROM connections ORDER BY created_at"
                )
            )
        ).all()
    assert [tuple(row) for row in rows] == [("needs_reauth", None, None, None)] * 2
    error = await failure(  # the half-done authorization is over too: no code goes anywhere
        world.stub.CompleteConnection(
            pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
            metadata=world.user,
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_INVALID")
    assert sum(elsewhere.requests.values()) == 0
    assert connection.name != pending.connection.name


async def test_a_move_within_the_origin_keeps_the_secret_and_the_connections(
    world: World, bank: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(bank)
    connection = await world.connect(bank)
    await world.stub.UpdateProvider(
        pb.UpdateProviderRequest(
            provider=pb.Provider(
                name="providers/bank", token_endpoint=bank.token_endpoint + "?v=2"
            ),
            update_mask=FieldMask(paths=["token_endpoint"]),
        ),
        metadata=world.admin,
    )
    refreshed = await world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    assert refreshed.connection.state == pb.CONNECTION_STATE_ACTIVE
    assert bank.last_token_request is not None
    assert bank.last_token_request.path == "/token?v=2"


async def test_a_revocation_endpoint_on_another_origin_is_refused(
    world: World, bank: FakeOAuthProvider, elsewhere: FakeOAuthProvider
) -> None:
    request = pb.CreateProviderRequest(
        provider_id="split",
        provider=pb.Provider(
            display_name="Split",
            auth_type=pb.AUTH_TYPE_OAUTH2,
            authorization_endpoint=bank.authorization_endpoint,
            token_endpoint=bank.token_endpoint,
            revocation_endpoint=elsewhere.revocation_endpoint,
            client_id=bank.client_id,
            redirect_uris=[REDIRECT],
        ),
        client_secret=bank.client_secret or "",
    )
    error = await failure(world.stub.CreateProvider(request, metadata=world.admin))
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ENDPOINT_ORIGIN_MISMATCH",
    )
    assert fields(error) == ["provider.revocation_endpoint"]


# -- redirect URIs: an exact allowlist ----------------------------------------------------

NEAR_MISSES = [
    REDIRECT + "/",
    REDIRECT + "?next=/admin",
    REDIRECT + "/../evil",
    REDIRECT + "#frag",
    REDIRECT[:-1],
    REDIRECT.upper(),
    "https://APP.example.com/callback",
    "https://app.example.com:443/callback",
    "https://app.example.com/%63allback",
    "https://app.example.com.evil.example/callback",
    "http://app.example.com/callback",
    "https://evil.example/callback",
    "",
]


async def test_start_connection_takes_only_a_registered_redirect_uri_verbatim(
    world: World, bank: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(bank)
    for uri in NEAR_MISSES:
        error = await failure(
            world.stub.StartConnection(
                pb.StartConnectionRequest(provider="providers/bank", redirect_uri=uri),
                metadata=world.user,
            )
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "REDIRECT_URI_NOT_ALLOWED",
        ), uri
        assert fields(error) == ["redirect_uri"]
    async with world.app.platform.database.engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM connections"))).scalar_one() == 0
    assert (await world.connect(bank)).state == pb.CONNECTION_STATE_ACTIVE


async def test_a_provider_without_redirect_uris_refuses_every_oauth_start(
    world: World, bank: FakeOAuthProvider
) -> None:
    created = await world.create_oauth_provider(bank)
    await world.stub.UpdateProvider(
        pb.UpdateProviderRequest(
            provider=pb.Provider(name=created.name),
            update_mask=FieldMask(paths=["redirect_uris"]),
        ),
        metadata=world.admin,
    )
    error = await failure(
        world.stub.StartConnection(
            pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
            metadata=world.user,
        )
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REDIRECT_URI_NOT_ALLOWED",
    )
    other = "http://127.0.0.1:8765/done"  # a native app's loopback redirect (RFC 8252)
    updated = await world.stub.UpdateProvider(
        pb.UpdateProviderRequest(
            provider=pb.Provider(name=created.name, redirect_uris=[other, REDIRECT]),
            update_mask=FieldMask(paths=["redirect_uris"]),
        ),
        metadata=world.admin,
    )
    assert list(updated.provider.redirect_uris) == [other, REDIRECT]
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=other),
        metadata=world.user,
    )
    assert started.connection.state == pb.CONNECTION_STATE_PENDING


@pytest.mark.parametrize(
    "uris",
    [
        [f"https://app.example.com/cb{i}" for i in range(21)],
        ["https://app.example.com/" + "a" * 2100],
        ["http://app.example.com/callback"],
        ["https://app.example.com/callback#fragment"],
        ["https://user:pw@app.example.com/callback"],
        ["https://app.example.com/call back"],
        ["/callback"],
    ],
    ids=["too-many", "too-long", "plain-http", "fragment", "credentials", "space", "relative"],
)
async def test_redirect_uri_registrations_are_bounded_and_absolute(
    world: World, bank: FakeOAuthProvider, uris: list[str]
) -> None:
    request = pb.CreateProviderRequest(
        provider_id="bank",
        provider=pb.Provider(
            display_name="Bank",
            auth_type=pb.AUTH_TYPE_OAUTH2,
            authorization_endpoint=bank.authorization_endpoint,
            token_endpoint=bank.token_endpoint,
            client_id=bank.client_id,
            redirect_uris=uris,
        ),
    )
    error = await failure(world.stub.CreateProvider(request, metadata=world.admin))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert all(field.startswith("provider.redirect_uris") for field in fields(error))


# -- scopes: bounded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "scopes",
    [
        [f"s{i}" for i in range(20_000)],
        [f"s{i}" for i in range(51)],
        ["x" * 129],
        ['say"hi'],
        ["back\\slash"],
        ["café"],
        ["two words"],
        [""],
    ],
    ids=["20000", "51", "long", "quote", "backslash", "non-ascii", "space", "empty"],
)
async def test_start_connection_scopes_are_bounded_scope_tokens(
    world: World, bank: FakeOAuthProvider, scopes: list[str]
) -> None:
    await world.create_oauth_provider(bank)
    error = await failure(
        world.stub.StartConnection(
            pb.StartConnectionRequest(
                provider="providers/bank", redirect_uri=REDIRECT, scopes=scopes
            ),
            metadata=world.user,
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(error)
    assert all(field.startswith("scopes") for field in fields(error))
    if len(scopes) == 1 and len(scopes[0]) <= 128:  # within any generic length bound
        assert (error.reason, fields(error)) == ("SCOPE_INVALID", ["scopes"])


async def test_provider_default_scopes_are_bounded_scope_tokens(
    world: World, bank: FakeOAuthProvider
) -> None:
    for scopes in ([f"s{i}" for i in range(51)], ['say"hi']):
        request = pb.CreateProviderRequest(
            provider_id="bank",
            provider=pb.Provider(
                display_name="Bank",
                auth_type=pb.AUTH_TYPE_OAUTH2,
                authorization_endpoint=bank.authorization_endpoint,
                token_endpoint=bank.token_endpoint,
                client_id=bank.client_id,
                default_scopes=scopes,
            ),
        )
        error = await failure(world.stub.CreateProvider(request, metadata=world.admin))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert all(field.startswith("provider.default_scopes") for field in fields(error))
    widest = [f"{i:03d}" + "x" * 125 for i in range(50)]
    await world.create_oauth_provider(bank)
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT, scopes=widest),
        metadata=world.user,
    )
    assert list(started.connection.scopes) == widest


# -- token endpoint answers ---------------------------------------------------------------


def tokens(expires_in: Any) -> dict[str, Any]:
    return {
        "access_token": "at-custom",
        "refresh_token": "rt-custom",
        "token_type": "Bearer",
        "expires_in": expires_in,
    }


async def started_and_consented(
    world: World, bank: FakeOAuthProvider
) -> tuple[str, dict[str, str]]:
    started = await world.stub.StartConnection(
        pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
        metadata=world.user,
    )
    return started.connection.name, bank.authorize(started.authorization_url)


def complete(world: World, consent: dict[str, str]) -> Any:
    return world.stub.CompleteConnection(
        pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
        metadata=world.user,
    )


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (10**30, YEAR),
        (10**400, YEAR),
        (1e300, YEAR),
        (math.inf, YEAR),
        (-5, 0),
        (-math.inf, 0),
        ("3600", 3600),
        (3600.9, 3600),
    ],
    ids=[
        "huge-int",
        "giant-int",
        "huge-float",
        "infinity",
        "negative",
        "minus-infinity",
        "string",
        "float",
    ],
)
async def test_a_stated_lifetime_out_of_range_is_clamped(
    world: World, bank: FakeOAuthProvider, expires_in: Any, lifetime: int
) -> None:
    await world.create_oauth_provider(bank)
    _, consent = await started_and_consented(world, bank)
    bank.answer_next("token", tokens(expires_in))
    completed = (await complete(world, consent)).connection
    assert completed.state == pb.CONNECTION_STATE_ACTIVE
    assert abs(completed.expire_time.seconds - (time.time() + lifetime)) < 60
    if lifetime:  # an expired one would be refreshed first, with a token the fake never issued
        assert (await world.credential(completed.name)).access_token == "at-custom"


@pytest.mark.parametrize(
    "body",
    [
        tokens(math.nan),
        tokens(True),
        tokens("soon"),
        tokens([3600]),
        tokens({"seconds": 3600}),
        {"token_type": "Bearer", "expires_in": 3600},
        {"access_token": ["at"], "expires_in": 3600},
        {"access_token": "at", "scope": " ".join(f"s{i}" for i in range(20_000))},
    ],
    ids=["nan", "bool", "word", "list", "object", "no-access-token", "list-token", "scopes"],
)
async def test_an_unusable_token_answer_fails_the_connection_cleanly(
    world: World, bank: FakeOAuthProvider, body: dict[str, Any]
) -> None:
    await world.create_oauth_provider(bank)
    name, consent = await started_and_consented(world, bank)
    bank.answer_next("token", body)
    error = await failure(complete(world, consent))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_RESPONSE_INVALID",
    )
    assert error.error_info is not None
    assert error.error_info.metadata["field"] in {"expires_in", "access_token", "scope"}
    assert await state_of(world, name) == pb.CONNECTION_STATE_NEEDS_REAUTH  # not PENDING


async def test_an_unusable_refresh_answer_leaves_the_connection_as_it_was(
    world: World, bank: FakeOAuthProvider
) -> None:
    await world.create_oauth_provider(bank)
    connection = await world.connect(bank)
    before = (await world.credential(connection.name)).access_token
    bank.answer_next("token", tokens(math.nan))
    error = await failure(
        world.stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
        )
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_RESPONSE_INVALID",
    )
    assert await state_of(world, connection.name) == pb.CONNECTION_STATE_ACTIVE
    assert (await world.credential(connection.name)).access_token == before
    bank.answer_next("token", tokens(10**30))
    refreshed = await world.stub.RefreshConnection(
        pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
    )
    assert abs(refreshed.connection.expire_time.seconds - (time.time() + YEAR)) < 60


@pytest.mark.parametrize(
    "body",
    [
        {"error": "x" * 100_000 + "\x1b[2J\x00\r\n", "error_description": "y\x07" * 50_000},
        {"error": {"nested": ["deep"] * 10_000}},
        {"error": 42, "error_description": None},
    ],
    ids=["huge-with-controls", "object", "number"],
)
async def test_an_upstream_error_body_is_not_reflected_unbounded(
    world: World, bank: FakeOAuthProvider, body: dict[str, Any]
) -> None:
    await world.create_oauth_provider(bank)
    name, consent = await started_and_consented(world, bank)
    bank.answer_next("token", body, status=400)
    error = await failure(complete(world, consent))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_REJECTED")
    assert len(error.message) < 200
    assert error.message.isprintable()
    assert error.error_info is not None
    reflected = error.error_info.metadata["oauth_error"]
    assert 0 < len(reflected) <= 64
    assert reflected.isprintable()
    assert await state_of(world, name) == pb.CONNECTION_STATE_NEEDS_REAUTH
    async with world.app.platform.database.engine.connect() as db:
        longest = (
            await db.execute(text("SELECT max(length(details)) FROM audit_events"))
        ).scalar_one()
    assert longest < 2000


async def test_an_unreachable_provider_leaves_the_authorization_open_for_a_retry(
    any_world: World, bank: FakeOAuthProvider
) -> None:
    world = any_world
    await world.create_oauth_provider(bank)
    name, consent = await started_and_consented(world, bank)
    bank.fail_next("token", status=503, count=3)  # every attempt of the retry budget
    error = await failure(complete(world, consent))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert await state_of(world, name) == pb.CONNECTION_STATE_PENDING
    completed = (await complete(world, consent)).connection
    assert (completed.name, completed.state) == (name, pb.CONNECTION_STATE_ACTIVE)
