"""Three services and a user: `front` receives the user's token, exchanges it with
Keyhold for one to call `reports` on the user's behalf, and calls `reports`, which
accepts only tokens for its own audience with its scope and sees the user as subject
and `front` as actor. After the user logs out, the exchanged token is inactive at once.
Every service here is a real gRPC server; tokens travel as bearer metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from keyhold.application.identity.api_resources import Definition
from keyhold.client import (
    RequireKeyholdToken,
    ServiceAccountCredentials,
    current_principal,
    keyhold_channel,
)
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer, build_server
from tests.support.servers import bearer, service_token, settings_for, signed_in
from tests.support.status import rich_error

REPORTS = Definition(
    "Reports",
    "reports.internal",
    {"reports.read": "read reports", "reports.write": "write reports"},
    {"reports:viewer": frozenset({"reports.read"})},
)


async def _reports_get(request: bytes, context: Any) -> bytes:
    caller = current_principal()
    return f"{caller.subject} via {','.join(caller.actor_chain)}".encode()


def _bearer_of(context: Any) -> str:
    header = dict(context.invocation_metadata() or ()).get("authorization", "")
    return str(header).removeprefix("Bearer ")


@dataclass
class Fleet:
    app: KeyholdServer
    keyhold: grpc.aio.Channel  # plaintext, no credentials
    front: grpc.aio.Channel
    reports: grpc.aio.Channel
    front_account: str
    user_token: str
    exchanged: list[str]  # the tokens front obtained, in order


async def _serve(server: grpc.aio.Server, service: str, method: str, handler: Any) -> str:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service, {method: grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return f"127.0.0.1:{port}"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    app = await build_server(settings_for(tmp_path))
    target = f"127.0.0.1:{await app.start()}"
    resources = app.identity.api_resources
    await resources.create("reports", REPORTS)
    user_token, user = await signed_in(app, "ada@example.com")
    await resources.grant_roles(user, "api-resources/reports", ["reports:viewer"])
    front_account, secret = await app.identity.service_accounts.create("front", [])
    await resources.set_exchange_grant(
        front_account.name, "api-resources/reports", ["reports.read", "reports.write"]
    )

    keyhold = grpc.aio.insecure_channel(target)
    reports_server = grpc.aio.server(
        interceptors=[
            RequireKeyholdToken.for_audience(keyhold, "reports.internal", {"reports.read"})
        ]
    )
    reports_target = await _serve(reports_server, "demo.Reports", "Get", _reports_get)
    reports = grpc.aio.insecure_channel(reports_target)
    as_front = keyhold_channel(target, ServiceAccountCredentials(front_account.client_id, secret))
    exchanged: list[str] = []

    async def front_get(request: bytes, context: Any) -> bytes:
        token = await pb_grpc.IdentityServiceStub(as_front).ExchangeToken(
            pb.ExchangeTokenRequest(subject_token=_bearer_of(context), audience="reports.internal")
        )
        exchanged.append(token.access_token)
        answer: bytes = await reports.unary_unary("/demo.Reports/Get")(
            b"", metadata=bearer(token.access_token)
        )
        return answer

    front_server = grpc.aio.server()
    front = grpc.aio.insecure_channel(await _serve(front_server, "demo.Front", "Get", front_get))
    try:
        yield Fleet(app, keyhold, front, reports, front_account.name, user_token, exchanged)
    finally:
        for channel in (front, reports, as_front, keyhold):
            await channel.close()
        await front_server.stop(0)
        await reports_server.stop(0)
        await app.stop(grace=0.2)


async def _front_get(fleet: Fleet, token: str) -> bytes:
    answer: bytes = await fleet.front.unary_unary("/demo.Front/Get")(b"", metadata=bearer(token))
    return answer


async def test_reports_sees_the_user_as_subject_and_front_as_actor(fleet: Fleet) -> None:
    user = jwt.decode(fleet.user_token, options={"verify_signature": False})
    answer = await _front_get(fleet, fleet.user_token)
    assert answer.decode() == f"{user['sub']} via {fleet.front_account}"

    claims = jwt.decode(fleet.exchanged[0], options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["scope"], claims["sid"]) == (
        user["sub"],
        "reports.internal",
        "reports.read",  # what the user's role grants there, within what front may delegate
        user["sid"],
    )
    assert claims["act"] == {"sub": fleet.front_account}
    assert claims["exp"] <= user["exp"]


async def test_a_token_minted_for_another_audience_is_refused_by_reports(fleet: Fleet) -> None:
    resources = fleet.app.identity.api_resources
    await resources.create(
        "billing", Definition("Billing", "billing.internal", {"billing.read": ""}, {})
    )
    accounts = fleet.app.identity.service_accounts
    account, secret = await accounts.create("caller", [])
    await resources.grant_scopes(account.name, "api-resources/billing", ["billing.read"])
    await resources.grant_scopes(account.name, "api-resources/reports", ["reports.read"])
    for_billing = await accounts.issue_token(account.client_id, secret, [], "billing.internal")
    for_keyhold = await accounts.issue_token(account.client_id, secret, [])
    for_reports = await accounts.issue_token(account.client_id, secret, [], "reports.internal")
    get = fleet.reports.unary_unary("/demo.Reports/Get")
    assert await get(b"", metadata=bearer(for_reports.token.token)) == (
        f"{account.name} via ".encode()
    )
    for token in (for_billing, for_keyhold):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get(b"", metadata=bearer(token.token.token))
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_AUDIENCE_MISMATCH",
        )


async def test_after_logout_the_exchanged_token_is_inactive_at_once(fleet: Fleet) -> None:
    await _front_get(fleet, fleet.user_token)
    identity = pb_grpc.IdentityServiceStub(fleet.keyhold)
    introspector = await service_token(fleet.app, ("identity.introspect",), "checker")
    seen = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=fleet.exchanged[0]), metadata=bearer(introspector)
    )
    assert (seen.active, seen.audience, list(seen.actor_chain)) == (
        True,
        "reports.internal",
        [fleet.front_account],
    )
    await identity.DeleteSession(
        pb.DeleteSessionRequest(name="sessions/current"), metadata=bearer(fleet.user_token)
    )
    seen = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=fleet.exchanged[0]), metadata=bearer(introspector)
    )
    assert not seen.active


async def test_after_the_user_is_disabled_the_exchanged_token_is_inactive_at_once(
    fleet: Fleet,
) -> None:
    await _front_get(fleet, fleet.user_token)
    identity = pb_grpc.IdentityServiceStub(fleet.keyhold)
    introspector = await service_token(fleet.app, ("identity.introspect",), "checker")
    admin, _ = await signed_in(fleet.app, "root@example.com", ("admin", "user"))
    user = jwt.decode(fleet.user_token, options={"verify_signature": False})["sub"]
    await identity.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=user, state=pb.USER_STATE_DISABLED),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=bearer(admin),
    )
    seen = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=fleet.exchanged[0]), metadata=bearer(introspector)
    )
    assert not seen.active


@pytest.mark.parametrize(
    ("asked", "audience", "code", "reason"),
    [
        (
            ["reports.write"],
            "reports.internal",
            grpc.StatusCode.PERMISSION_DENIED,
            "SCOPE_NOT_GRANTED",
        ),
        ([], "billing.internal", grpc.StatusCode.INVALID_ARGUMENT, "AUDIENCE_UNKNOWN"),
        ([], "keyhold", grpc.StatusCode.INVALID_ARGUMENT, "AUDIENCE_UNKNOWN"),
    ],
)
async def test_an_exchange_beyond_what_is_granted_is_refused(
    fleet: Fleet, asked: list[str], audience: str, code: grpc.StatusCode, reason: str
) -> None:
    """front may delegate reports.write, but the user's role does not grant it."""
    front = await _front_token(fleet)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(fleet.keyhold).ExchangeToken(
            pb.ExchangeTokenRequest(
                subject_token=fleet.user_token, audience=audience, scopes=asked
            ),
            metadata=bearer(front),
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (code, reason)


async def _front_token(fleet: Fleet) -> str:
    """A token of the front service's own account, as its credentials would take."""
    accounts = fleet.app.identity.service_accounts
    account, secret = await accounts.create("front-2", [])
    await fleet.app.identity.api_resources.set_exchange_grant(
        account.name, "api-resources/reports", ["reports.read", "reports.write"]
    )
    issued = await accounts.issue_token(account.client_id, secret, [])
    return issued.token.token


async def test_only_granted_services_exchange_only_live_user_tokens(fleet: Fleet) -> None:
    identity = pb_grpc.IdentityServiceStub(fleet.keyhold)
    stranger = await service_token(fleet.app, (), "stranger")
    front = await _front_token(fleet)
    for caller, subject, reason in [
        (stranger, fleet.user_token, "EXCHANGE_NOT_GRANTED"),
        (front, "not-a-token", "SUBJECT_TOKEN_INVALID"),
        (front, stranger, "SUBJECT_TOKEN_INVALID"),  # a service's token is no user's
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.ExchangeToken(
                pb.ExchangeTokenRequest(subject_token=subject, audience="reports.internal"),
                metadata=bearer(caller),
            )
        assert rich_error(caught.value).reason == reason


async def test_a_token_passes_through_at_most_the_configured_number_of_services(
    fleet: Fleet,
) -> None:
    identity = pb_grpc.IdentityServiceStub(fleet.keyhold)
    first = await _front_token(fleet)
    second = await _front_token(fleet)
    third = await _front_token(fleet)
    once = await identity.ExchangeToken(
        pb.ExchangeTokenRequest(subject_token=fleet.user_token, audience="reports.internal"),
        metadata=bearer(first),
    )
    twice = await identity.ExchangeToken(
        pb.ExchangeTokenRequest(subject_token=once.access_token, audience="reports.internal"),
        metadata=bearer(second),
    )
    claims = jwt.decode(twice.access_token, options={"verify_signature": False})
    assert (
        claims["act"]["act"]["sub"] == jwt.decode(first, options={"verify_signature": False})["sub"]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.ExchangeToken(
            pb.ExchangeTokenRequest(subject_token=twice.access_token, audience="reports.internal"),
            metadata=bearer(third),
        )
    assert rich_error(caught.value).reason == "DELEGATION_TOO_DEEP"
