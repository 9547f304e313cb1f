"""Connections: an API key, OAuth 2.0 with PKCE against a scripted provider, and
credentials refreshed when they are about to expire."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from keyhold.application.provider.catalog import ProviderCatalog, ProviderFields
from keyhold.application.provider.connections import Connections
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import FailedPrecondition, Unavailable
from keyhold.domain.identity.users import User
from keyhold.domain.provider.connections import Connection, ConnectionState, Credentials
from keyhold.domain.provider.egress import EgressPolicy
from keyhold.domain.provider.oauth import OAuthError, ProviderUnreachable, TokenSet
from keyhold.domain.provider.providers import AuthType
from tests.support.fakes.connections import InMemoryRefreshLock
from tests.support.fakes.oauth import FakeOAuthClient
from tests.unit.application.harness import (
    ADMIN,
    Ports,
    act_as,
    add_user,
    attempts,
    outcome_details,
    user_principal,
)

REDIRECT = "https://app.example.com/callback"
CLIENT_SECRET = "upstream-client-secret"
MARGIN = timedelta(minutes=5)


@pytest.fixture
def oauth() -> FakeOAuthClient:
    return FakeOAuthClient()


@pytest.fixture
def lock() -> InMemoryRefreshLock:
    return InMemoryRefreshLock()


@pytest.fixture
def connections(ports: Ports, oauth: FakeOAuthClient, lock: InMemoryRefreshLock) -> Connections:
    return Connections(
        ports.unit_of_work,
        oauth,
        ports.sealer,
        lock,
        ports.recorder,
        ports.clock,
        refresh_margin=MARGIN,
    )


@pytest.fixture
async def ada(ports: Ports) -> User:
    catalog = ProviderCatalog(
        ports.unit_of_work, ports.sealer, ports.recorder, ports.clock, EgressPolicy()
    )
    act_as(ADMIN)
    await catalog.create(
        "calendar",
        ProviderFields(
            display_name="Calendar",
            auth_type=AuthType.OAUTH2,
            authorization_endpoint="https://idp.example.com/authorize",
            token_endpoint="https://idp.example.com/token",
            revocation_endpoint="https://idp.example.com/revoke",
            client_id="keyhold-client",
            default_scopes=("calendar.read",),
            redirect_uris=(REDIRECT,),
        ),
        CLIENT_SECRET,
    )
    await catalog.create(
        "weather", ProviderFields(display_name="Weather", auth_type=AuthType.API_KEY), ""
    )
    user = await add_user(ports)
    act_as(user_principal(user))
    return user


async def _connected(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, tokens: TokenSet
) -> Connection:
    _, url = await connections.start("providers/calendar", REDIRECT, [], "")
    state = parse_qs(urlsplit(url).query)["state"][0]
    oauth.exchange_answers.append(tokens)
    return await connections.complete(state, "the-code")


async def test_an_api_key_connection_is_active_at_once(
    ports: Ports, connections: Connections, ada: User
) -> None:
    connection, url = await connections.start("providers/weather", "", [], "wk-123")

    assert url == ""
    assert (connection.state, connection.user_id) == (ConnectionState.ACTIVE, ada.id)
    credential = await connections.credential(connection.name)
    assert (credential.value, credential.auth_type) == ("wk-123", AuthType.API_KEY)
    assert attempts(ports, Action.CONNECTION_START) == [
        ("attempted", connection.name, ""),
        ("succeeded", connection.name, ""),
    ]
    assert attempts(ports, Action.CREDENTIAL_READ) == [
        ("attempted", connection.name, ""),
        ("succeeded", connection.name, ""),
    ]
    assert "wk-123" not in str(ports.audit.records())


async def test_oauth_start_sends_the_user_with_a_pkce_challenge_and_complete_stores_tokens(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    pending, url = await connections.start("providers/calendar", REDIRECT, [], "")

    assert pending.state is ConnectionState.PENDING
    assert pending.credential_origin == "https://idp.example.com:443"
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://idp.example.com/authorize"
    assert query["client_id"] == "keyhold-client"
    assert (query["redirect_uri"], query["scope"]) == (REDIRECT, "calendar.read")
    assert query["code_challenge_method"] == "S256"
    oauth.exchange_answers.append(TokenSet("at-1", "rt-1", expires_in=3600, scope="calendar.read"))

    active = await connections.complete(query["state"], "the-code")

    assert (active.id, active.state) == (pending.id, ConnectionState.ACTIVE)
    assert active.expires_at == ports.clock.now() + timedelta(hours=1)
    (exchange,) = oauth.exchanges
    assert (exchange.client_secret, exchange.code) == (CLIENT_SECRET, "the-code")
    assert exchange.redirect_uri == REDIRECT
    challenge = base64.urlsafe_b64encode(hashlib.sha256(exchange.verifier.encode()).digest())
    assert challenge.rstrip(b"=").decode() == query["code_challenge"]
    row = ports.store.tables.connections[pending.id]
    assert row.connection == active
    assert row.credentials == Credentials(access_token="at-1", refresh_token="rt-1")
    assert row.pending is None
    assert attempts(ports, Action.CONNECTION_COMPLETE) == [
        ("attempted", "", ""),
        ("succeeded", active.name, ""),
    ]
    with pytest.raises(FailedPrecondition) as reused:
        await connections.complete(query["state"], "the-code")
    assert reused.value.reason == "STATE_INVALID"


async def test_another_user_cannot_complete_the_authorization(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    pending, url = await connections.start("providers/calendar", REDIRECT, [], "")
    state = parse_qs(urlsplit(url).query)["state"][0]
    act_as(user_principal(await add_user(ports, "mallory@example.com")))

    with pytest.raises(FailedPrecondition) as raised:
        await connections.complete(state, "the-code")

    assert raised.value.reason == "STATE_INVALID"
    assert oauth.exchanges == []
    assert ports.store.tables.connections[pending.id].pending is not None
    assert attempts(ports, Action.CONNECTION_COMPLETE) == [
        ("attempted", "", ""),
        ("failed", "", "STATE_INVALID"),
    ]


async def test_an_unreachable_provider_leaves_the_authorization_for_a_retry(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    pending, url = await connections.start("providers/calendar", REDIRECT, [], "")
    state = parse_qs(urlsplit(url).query)["state"][0]
    oauth.exchange_answers += [ProviderUnreachable("timed out"), TokenSet("at-1", "rt-1")]

    with pytest.raises(Unavailable) as raised:
        await connections.complete(state, "the-code")
    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    assert ports.store.tables.connections[pending.id].pending is not None
    active = await connections.complete(state, "the-code")

    assert active.state is ConnectionState.ACTIVE
    assert len(oauth.exchanges) == 2
    assert [o for o, _, _ in attempts(ports, Action.CONNECTION_COMPLETE)] == [
        "attempted",
        "failed",
        "attempted",
        "succeeded",
    ]


async def test_a_refused_code_ends_the_authorization(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    pending, url = await connections.start("providers/calendar", REDIRECT, [], "")
    state = parse_qs(urlsplit(url).query)["state"][0]
    oauth.exchange_answers.append(OAuthError("invalid_grant", "code expired"))

    with pytest.raises(FailedPrecondition) as raised:
        await connections.complete(state, "the-code")

    assert raised.value.reason == "PROVIDER_REJECTED"
    row = ports.store.tables.connections[pending.id]
    assert (row.connection.state, row.pending) == (ConnectionState.NEEDS_REAUTH, None)
    assert attempts(ports, Action.CONNECTION_COMPLETE)[-1] == (
        "failed",
        pending.name,
        "PROVIDER_REJECTED",
    )
    assert outcome_details(ports, Action.CONNECTION_COMPLETE) == {"oauth_error": "invalid_grant"}


async def test_a_credential_about_to_expire_is_refreshed_before_it_is_read(
    ports: Ports,
    connections: Connections,
    oauth: FakeOAuthClient,
    lock: InMemoryRefreshLock,
    ada: User,
) -> None:
    active = await _connected(ports, connections, oauth, TokenSet("at-1", "rt-1", expires_in=3600))
    ports.clock.advance((timedelta(hours=1) - MARGIN).total_seconds())
    oauth.refresh_answers.append(TokenSet("at-2", expires_in=3600))  # the refresh token kept

    credential = await connections.credential(active.name)

    assert credential.value == "at-2"
    assert credential.expires_at == ports.clock.now() + timedelta(hours=1)
    (refresh,) = oauth.refreshes
    assert (refresh.client_secret, refresh.refresh_token) == (CLIENT_SECRET, "rt-1")
    assert lock.holds == [active.id]
    row = ports.store.tables.connections[active.id]
    assert row.credentials == Credentials(access_token="at-2", refresh_token="rt-1")
    assert row.connection.last_refresh_at == ports.clock.now()
    assert attempts(ports, Action.CONNECTION_REFRESH) == [
        ("attempted", active.name, ""),
        ("succeeded", active.name, ""),
    ]
    assert attempts(ports, Action.CREDENTIAL_READ)[-1] == ("succeeded", active.name, "")


async def test_a_fresh_credential_is_read_without_asking_the_provider(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    active = await _connected(ports, connections, oauth, TokenSet("at-1", "rt-1", expires_in=3600))
    ports.clock.advance(60)

    credential = await connections.credential(active.name)

    assert (credential.value, credential.token_type) == ("at-1", "Bearer")
    assert oauth.refreshes == []
    assert attempts(ports, Action.CONNECTION_REFRESH) == []


async def test_a_refresh_token_the_provider_refuses_asks_for_a_new_authorization(
    ports: Ports, connections: Connections, oauth: FakeOAuthClient, ada: User
) -> None:
    active = await _connected(ports, connections, oauth, TokenSet("at-1", "rt-1", expires_in=60))
    oauth.refresh_answers.append(OAuthError("invalid_grant"))

    with pytest.raises(FailedPrecondition) as raised:
        await connections.credential(active.name)

    assert raised.value.reason == "REFRESH_REJECTED"
    stored = ports.store.tables.connections[active.id]
    assert stored.connection.state is ConnectionState.NEEDS_REAUTH
    assert attempts(ports, Action.CONNECTION_REFRESH)[-1] == (
        "failed",
        active.name,
        "REFRESH_REJECTED",
    )
    with pytest.raises(FailedPrecondition) as again:
        await connections.credential(active.name)
    assert again.value.reason == "CONNECTION_NEEDS_REAUTH"
