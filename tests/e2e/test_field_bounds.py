"""Request fields beyond the bounds their proto declares are refused INVALID_ARGUMENT
with a BadRequest naming the field, for every service, before the rate limiter counts
the call or the handler writes anything."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import Table, func, select

from keyhold.adapters.persistence import tables
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.server import KeyholdServer
from tests.support.rpcs import Rpc, keyhold_rpcs
from tests.support.servers import PASSWORD, bearer, service_token, signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
WRITTEN = (
    tables.users,
    tables.sessions,
    tables.service_accounts,
    tables.providers,
    tables.connections,
    tables.one_time_tokens,
)
EMAIL_SUFFIX = "@example.com"
LONG_EMAIL = "a" * (255 - len(EMAIL_SUFFIX)) + EMAIL_SUFFIX  # 255: one over the bound


def rpc_named(name: str) -> Rpc:
    return next(rpc for rpc in keyhold_rpcs() if rpc.name == name)


async def refusal(
    channel: grpc.aio.Channel, name: str, request: Message, metadata: Sequence[tuple[str, str]]
) -> RichError:
    call = rpc_named(name).typed(channel)(request, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


async def row_counts(app: KeyholdServer) -> dict[str, int]:
    counts = {}
    async with app.platform.database.engine.connect() as connection:
        for table in WRITTEN:
            assert isinstance(table, Table)
            counts[table.name] = int(
                await connection.scalar(select(func.count()).select_from(table)) or 0
            )
    return counts


CASES: list[tuple[str, str, Message, str, str]] = [
    # (rpc, caller, request, reason, field)
    (
        "IdentityService.CreateUser",
        "anonymous",
        identity_pb.CreateUserRequest(email=LONG_EMAIL, password=PASSWORD),
        "FIELD_TOO_LONG",
        "email",
    ),
    (
        "IdentityService.CreateUser",
        "anonymous",
        identity_pb.CreateUserRequest(
            email="new@example.com", password=PASSWORD, display_name="d" * 257
        ),
        "FIELD_TOO_LONG",
        "display_name",
    ),
    (
        "IdentityService.CreateSession",
        "anonymous",
        identity_pb.CreateSessionRequest(
            email="user@example.com", password=PASSWORD, user_agent="u" * 1025
        ),
        "FIELD_TOO_LONG",
        "user_agent",
    ),
    (
        "IdentityService.UpdateUser",
        "admin",
        identity_pb.UpdateUserRequest(
            user=identity_pb.User(name="users/me", display_name="d" * 257),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        "FIELD_TOO_LONG",
        "user.display_name",
    ),
    (
        "IdentityService.UpdateUser",
        "admin",
        identity_pb.UpdateUserRequest(
            user=identity_pb.User(name="users/me", display_name="Ada"),
            update_mask=FieldMask(paths=["display_name"] * 65),  # FieldMask: the default
        ),
        "TOO_MANY_ITEMS",
        "update_mask.paths",
    ),
    (
        "IdentityService.CreateServiceAccount",
        "admin",
        identity_pb.CreateServiceAccountRequest(display_name="s", scopes=["audit.read"] * 65),
        "TOO_MANY_ITEMS",
        "scopes",
    ),
    (
        "IdentityService.CreateServiceAccount",
        "admin",
        identity_pb.CreateServiceAccountRequest(display_name="s", scopes=["s" * 129]),
        "FIELD_TOO_LONG",
        "scopes",
    ),
    (
        "IdentityService.IntrospectToken",
        "introspector",
        identity_pb.IntrospectTokenRequest(token="t" * (16 * 1024 + 1)),
        "FIELD_TOO_LONG",
        "token",
    ),
    (
        "AuditService.ListAuditEvents",
        "auditor",
        audit_pb.ListAuditEventsRequest(resource="r" * 513),
        "FIELD_TOO_LONG",
        "resource",
    ),
    (
        "AuditService.GetAuditEvent",
        "auditor",
        audit_pb.GetAuditEventRequest(name="audit-events/" + "1" * 244),
        "FIELD_TOO_LONG",
        "name",
    ),
    (
        "ProviderService.CreateProvider",
        "admin",
        provider_pb.CreateProviderRequest(
            provider_id="bank",
            provider=provider_pb.Provider(
                display_name="Bank",
                auth_type=provider_pb.AUTH_TYPE_OAUTH2,
                authorization_endpoint="https://bank.example.com/authorize",
                token_endpoint="https://bank.example.com/" + "t" * 2025,
                client_id="keyhold",
            ),
        ),
        "FIELD_TOO_LONG",
        "provider.token_endpoint",
    ),
    (
        "ProviderService.CreateProvider",
        "admin",
        provider_pb.CreateProviderRequest(
            provider_id="bank",
            provider=provider_pb.Provider(
                display_name="Bank",
                auth_type=provider_pb.AUTH_TYPE_API_KEY,
                default_scopes=["read"] * 101,
            ),
        ),
        "TOO_MANY_ITEMS",
        "provider.default_scopes",
    ),
    (
        "ProviderService.StartConnection",
        "user",
        provider_pb.StartConnectionRequest(provider="providers/keys", api_key="k" * 4097),
        "FIELD_TOO_LONG",
        "api_key",
    ),
    (
        "ProviderService.StartConnection",
        "user",
        provider_pb.StartConnectionRequest(
            provider="providers/keys", api_key="k-1", scopes=["read"] * 101
        ),
        "TOO_MANY_ITEMS",
        "scopes",
    ),
]


def case_id(case: tuple[str, str, Message, str, str]) -> str:
    return f"{case[0].split('.')[1]}-{case[4]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
async def test_a_field_over_its_bounds_is_refused_and_nothing_is_written(
    server: Server, case: tuple[str, str, Message, str, str]
) -> None:
    app, channel = server
    name, caller, request, reason, field = case
    tokens = {
        "anonymous": "",
        "user": (await signed_in(app, "user@example.com"))[0],
        "admin": (await signed_in(app, "admin@example.com", ("admin", "user")))[0],
        "auditor": await service_token(app, ("audit.read",), "auditor"),
        "introspector": await service_token(app, ("identity.introspect",), "introspector"),
    }
    admin = bearer(tokens["admin"])
    keys = provider_pb.CreateProviderRequest(
        provider_id="keys",
        provider=provider_pb.Provider(display_name="Keys", auth_type=provider_pb.AUTH_TYPE_API_KEY),
    )
    # What StartConnection connects to, so that only the bounds stop it from writing.
    await rpc_named("ProviderService.CreateProvider").typed(channel)(keys, metadata=admin)
    before = await row_counts(app)

    metadata = bearer(tokens[caller]) if tokens[caller] else ()
    error = await refusal(channel, name, request, metadata)

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == [field]
    assert await row_counts(app) == before


async def test_throttled_fields_over_their_bounds_are_refused_before_they_are_counted(
    server: Server,
) -> None:
    """The fields rate limits count by (client_id, email) never reach the limiter when
    over their bounds: more such calls than any limit allows are all refused for the
    field, and the peer can still log in afterwards."""
    app, channel = server
    await signed_in(app, "user@example.com")
    mailer = bearer(await service_token(app, ("identity.password_reset",), "mailer"))
    floods: list[tuple[str, Message, Sequence[tuple[str, str]], int, str]] = [
        (  # 120/minute per client_id
            "IdentityService.CreateServiceToken",
            identity_pb.CreateServiceTokenRequest(client_id="c" * 100_000, client_secret="s"),
            (),
            125,
            "client_id",
        ),
        (  # 5/minute per email
            "IdentityService.CreatePasswordReset",
            identity_pb.CreatePasswordResetRequest(email=LONG_EMAIL),
            mailer,
            8,
            "email",
        ),
        (  # 30/minute per peer
            "IdentityService.CreateSession",
            identity_pb.CreateSessionRequest(email=LONG_EMAIL, password=PASSWORD),
            (),
            35,
            "email",
        ),
    ]
    for name, request, metadata, calls, field in floods:
        errors = await asyncio.gather(
            *(refusal(channel, name, request, metadata) for _ in range(calls))
        )
        answers = {(e.code, e.reason, e.bad_request is not None) for e in errors}
        assert answers == {(grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG", True)}, name
        assert {e.bad_request.field_violations[0].field for e in errors if e.bad_request} == {field}
    assert not app.api.rate_limit_gate.rejections
    session = await rpc_named("IdentityService.CreateSession").typed(channel)(
        identity_pb.CreateSessionRequest(email="user@example.com", password=PASSWORD)
    )
    assert session.access_token
