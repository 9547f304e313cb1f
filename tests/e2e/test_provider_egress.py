"""The egress policy through the API: provider URLs the server may not fetch are refused
at registration (INVALID_ARGUMENT, `URL_NOT_ALLOWED`, the field named), and a name
that resolves to a refused address is refused at connect time (FAILED_PRECONDITION,
`EGRESS_REFUSED`, audited). Names resolve through a scripted resolver: no DNS query
and no connection leaves loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from keyhold.domain.provider.egress import IPAddress
from keyhold.provider.v1 import provider_service_pb2 as pb
from keyhold.provider.v1 import provider_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import PASSWORD, bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error

REDIRECT = "https://app.example.com/callback"
STRICT = {"egress_allow_loopback_http": False}


class LoopbackResolver:
    """Every name is 127.0.0.1, as a hostile DNS answer (or `localhost`) would have it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        return [ipaddress.ip_address("127.0.0.1")]


def oauth_provider(token_endpoint: str, **fields: Any) -> pb.Provider:
    values: dict[str, Any] = {
        "display_name": "Bank",
        "auth_type": pb.AUTH_TYPE_OAUTH2,
        "authorization_endpoint": "https://bank.example.com/authorize",
        "token_endpoint": token_endpoint,
        "client_id": "keyhold",
        "redirect_uris": [REDIRECT],
        **fields,
    }
    return pb.Provider(**values)


async def _admin(app: KeyholdServer) -> tuple[tuple[str, str], ...]:
    return bearer((await signed_in(app, "admin@example.com", ("admin", "user")))[0])


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    async with running_server(settings_for(tmp_path, **STRICT)) as started:
        yield started


@pytest.mark.parametrize(
    "url",
    [
        "http://bank.example.com/token",
        "https://169.254.169.254/latest/meta-data/iam",
        "https://10.0.0.1/token",
        "https://[::1]/token",
        "https://127.0.0.1:22/",
        "https://[::ffff:127.0.0.1]/token",
        "https://localhost/token",
        "https://user:password@bank.example.com/token",
        "https://bank.example.com:8443/token",
    ],
)
async def test_registration_refuses_urls_outside_the_policy(
    strict: tuple[KeyholdServer, grpc.aio.Channel], url: str
) -> None:
    app, channel = strict
    stub, admin = pb_grpc.ProviderServiceStub(channel), await _admin(app)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateProvider(
            pb.CreateProviderRequest(provider_id="bank", provider=oauth_provider(url)),
            metadata=admin,
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "URL_NOT_ALLOWED")
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["provider.token_endpoint"]

    created = await stub.CreateProvider(
        pb.CreateProviderRequest(
            provider_id="bank", provider=oauth_provider("https://bank.example.com/token")
        ),
        metadata=admin,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateProvider(
            pb.UpdateProviderRequest(
                provider=pb.Provider(name=created.provider.name, authorization_endpoint=url),
                update_mask=FieldMask(paths=["authorization_endpoint"]),
            ),
            metadata=admin,
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "URL_NOT_ALLOWED")
    assert error.bad_request is not None
    assert error.bad_request.field_violations[0].field == "provider.authorization_endpoint"


async def test_the_allowlist_opens_named_networks_and_ports(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, egress_allow="10.0.0.0/8, idp.corp.example:8443", **STRICT)
    async with running_server(settings) as (app, channel):
        stub, admin = pb_grpc.ProviderServiceStub(channel), await _admin(app)
        for slug, url in (
            ("ten", "https://10.0.0.1/token"),
            ("corp", "https://idp.corp.example:8443/token"),
        ):
            request = pb.CreateProviderRequest(provider_id=slug, provider=oauth_provider(url))
            created = await stub.CreateProvider(request, metadata=admin)
            assert created.provider.token_endpoint == url


async def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time(tmp_path: Path) -> None:
    resolver = LoopbackResolver()
    async with running_server(settings_for(tmp_path, **STRICT), egress_resolver=resolver) as (
        app,
        channel,
    ):
        stub, admin = pb_grpc.ProviderServiceStub(channel), await _admin(app)
        user = bearer((await signed_in(app, "ada@example.com"))[0])
        await stub.CreateProvider(
            pb.CreateProviderRequest(
                provider_id="bank",
                provider=oauth_provider("https://bank.example.com/token"),
                client_secret="provider-secret",
            ),
            metadata=admin,
        )
        started = await stub.StartConnection(
            pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
            metadata=user,
        )
        state = parse_qs(urlsplit(started.authorization_url).query)["state"][0]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CompleteConnection(
                pb.CompleteConnectionRequest(state=state, code="any-code"), metadata=user
            )
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EGRESS_REFUSED")
        assert resolver.asked == ["bank.example.com"]
        async with app.platform.database.engine.connect() as db:
            outcomes = (
                await db.execute(
                    text(
                        "SELECT outcome, reason FROM audit_events "
                        "WHERE action = 'provider.connection.complete' ORDER BY sequence"
                    )
                )
            ).all()
        assert [tuple(row) for row in outcomes][-1] == ("failed", "EGRESS_REFUSED")


async def test_loopback_http_works_only_with_the_development_setting(
    tmp_path: Path,
) -> None:
    """A provider registered in development (the fake one, plain http on 127.0.0.1) is
    refused, without a request sent, once the server runs without the setting."""
    with FakeOAuthProvider() as fake:
        async with running_server(settings_for(tmp_path)) as (app, channel):  # the setting on
            stub, admin = pb_grpc.ProviderServiceStub(channel), await _admin(app)
            user = bearer((await signed_in(app, "ada@example.com"))[0])
            await stub.CreateProvider(
                pb.CreateProviderRequest(
                    provider_id="bank",
                    provider=oauth_provider(
                        fake.token_endpoint,
                        authorization_endpoint=fake.authorization_endpoint,
                        client_id=fake.client_id,
                    ),
                    client_secret=fake.client_secret or "",
                ),
                metadata=admin,
            )
            started = await stub.StartConnection(
                pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
                metadata=user,
            )
            consent = fake.authorize(started.authorization_url)
            completed = await stub.CompleteConnection(
                pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
                metadata=user,
            )
            assert completed.connection.state == pb.CONNECTION_STATE_ACTIVE
        asked = fake.requests["token"]
        async with running_server(settings_for(tmp_path, **STRICT)) as (app, channel):
            stub = pb_grpc.ProviderServiceStub(channel)
            login = await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
            user = bearer(login.access_token.token)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RefreshConnection(
                    pb.RefreshConnectionRequest(name=completed.connection.name), metadata=user
                )
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "EGRESS_REFUSED",
            )
        assert fake.requests["token"] == asked
