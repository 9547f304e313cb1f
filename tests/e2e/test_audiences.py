"""Every token has one audience: Keyhold's own for sessions and by default, or the API
resource's a service token was asked for, carrying only scopes granted there. Keyhold
accepts only its own; it still introspects the others it minted."""

from __future__ import annotations

from typing import Any

import grpc
import jwt
import pytest

from keyhold.application.identity.api_resources import Definition
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, service_token, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
REPORTS = Definition(
    "Reports",
    "reports.internal",
    {"reports.read": "read reports", "reports.write": "write reports"},
    {"reports:viewer": frozenset({"reports.read"})},
)


async def _account(app: KeyholdServer, *reports_scopes: str) -> tuple[str, str]:
    account, secret = await app.identity.service_accounts.create("front", ["audit.read"])
    if reports_scopes:
        await app.identity.api_resources.grant_scopes(
            account.name, "api-resources/reports", list(reports_scopes)
        )
    return account.client_id, secret


def _request(client_id: str, secret: str, *scopes: str, audience: str = "") -> Any:
    return pb.CreateServiceTokenRequest(
        client_id=client_id, client_secret=secret, scopes=list(scopes), audience=audience
    )


@pytest.fixture
async def reports(server: Server) -> Server:
    app, _ = server
    await app.identity.api_resources.create("reports", REPORTS)
    return server


async def test_a_service_token_is_for_the_audience_asked_with_its_grant_there(
    reports: Server,
) -> None:
    app, channel = reports
    identity = pb_grpc.IdentityServiceStub(channel)
    client_id, secret = await _account(app, "reports.read", "reports.write")

    issued = await identity.CreateServiceToken(
        _request(client_id, secret, "reports.read", audience="reports.internal")
    )
    assert (issued.audience, list(issued.scopes)) == ("reports.internal", ["reports.read"])
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert (claims["aud"], claims["scope"]) == ("reports.internal", "reports.read")

    everything = await identity.CreateServiceToken(
        _request(client_id, secret, audience="reports.internal")
    )
    assert list(everything.scopes) == ["reports.read", "reports.write"]
    own = await identity.CreateServiceToken(_request(client_id, secret))
    assert (own.audience, list(own.scopes)) == ("keyhold", ["audit.read"])


@pytest.mark.parametrize(
    ("granted", "asked", "audience", "code", "reason"),
    [
        ((), (), "reports.internal", grpc.StatusCode.PERMISSION_DENIED, "SCOPE_NOT_GRANTED"),
        (
            ("reports.read",),
            ("reports.write",),
            "reports.internal",
            grpc.StatusCode.PERMISSION_DENIED,
            "SCOPE_NOT_GRANTED",
        ),
        (
            ("reports.read",),
            ("audit.read",),
            "reports.internal",
            grpc.StatusCode.PERMISSION_DENIED,
            "SCOPE_NOT_GRANTED",
        ),
        ((), (), "billing.internal", grpc.StatusCode.INVALID_ARGUMENT, "AUDIENCE_UNKNOWN"),
    ],
)
async def test_a_token_beyond_the_grant_or_for_no_resource_is_refused(
    reports: Server,
    granted: tuple[str, ...],
    asked: tuple[str, ...],
    audience: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    app, channel = reports
    client_id, secret = await _account(app, *granted)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(
            _request(client_id, secret, *asked, audience=audience)
        )
    assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (code, reason)


async def test_wrong_credentials_learn_nothing_of_audiences(reports: Server) -> None:
    app, channel = reports
    client_id, _ = await _account(app, "reports.read")
    for audience in ("reports.internal", "billing.internal"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(
                _request(client_id, "khs_wrong", audience=audience)
            )
        assert rich_error(caught.value).reason == "INVALID_CLIENT"


async def test_keyhold_accepts_only_its_own_audience_and_introspects_every_one(
    reports: Server,
) -> None:
    app, channel = reports
    identity = pb_grpc.IdentityServiceStub(channel)
    client_id, secret = await _account(app, "reports.read")
    for_reports = await identity.CreateServiceToken(
        _request(client_id, secret, audience="reports.internal")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(for_reports.access_token))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_AUDIENCE_MISMATCH",
    )

    introspector = await service_token(app, ("identity.introspect",), "checker")
    seen = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=for_reports.access_token), metadata=bearer(introspector)
    )
    assert (seen.active, seen.audience, list(seen.scopes)) == (
        True,
        "reports.internal",
        ["reports.read"],
    )
    user_token, _ = await signed_in(app, "ada@example.com")
    me = await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(user_token))
    assert me.audience == "keyhold"


async def test_a_token_for_a_deleted_resource_is_inactive(reports: Server) -> None:
    app, channel = reports
    identity = pb_grpc.IdentityServiceStub(channel)
    client_id, secret = await _account(app, "reports.read")
    for_reports = await identity.CreateServiceToken(
        _request(client_id, secret, audience="reports.internal")
    )
    introspector = await service_token(app, ("identity.introspect",), "checker")
    request = pb.IntrospectTokenRequest(token=for_reports.access_token)
    assert (await identity.IntrospectToken(request, metadata=bearer(introspector))).active
    await app.identity.api_resources.delete("api-resources/reports", force=True)
    assert not (await identity.IntrospectToken(request, metadata=bearer(introspector))).active
