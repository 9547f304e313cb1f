"""The hostile inputs the fuzzing in test_hostile_input.py found answered INTERNAL or
UNKNOWN, pinned down one by one on both databases."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import grpc
import jwt
import pytest

from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.jose_canonical import with_low_s
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, service_token, signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


async def refusal(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


def with_cursor(token: str, cursor: object) -> str:
    """`token` with its cursor replaced: page tokens are opaque, not secret."""
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    decoded["c"] = cursor
    return base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/keyhold.identity.v1.IdentityService/WhoAmI", b"\xff\xff\xff"),
        ("/keyhold.identity.v1.IdentityService/GetUser", b"\x0a\x02\xff\xfe"),
        ("/keyhold.audit.v1.AuditService/ListAuditEvents", b"\x0b" * 200 + b"\x0c" * 200),
    ],
    ids=["corrupt", "string-not-utf8", "nested-too-deep"],
)
async def test_a_request_that_does_not_decode_is_invalid_argument(
    server: Server, path: str, payload: bytes
) -> None:
    app, channel = server
    token, _ = await signed_in(app, "a@example.com", ("admin", "user"))
    raw = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    error = await refusal(raw(payload, metadata=bearer(token)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED")
    anonymous = await refusal(raw(payload))  # credentials are checked first
    assert anonymous.code is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "created",
    ["2020-01-01T00:00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"],
    ids=["naive", "after-9999-in-utc", "before-year-1-in-utc"],
)
async def test_a_forged_keyset_page_token_is_invalid_argument(
    any_server: Server, created: str
) -> None:
    app, channel = any_server
    token, _ = await signed_in(app, "a@example.com", ("admin", "user"))
    await signed_in(app, "b@example.com")
    identity = identity_grpc.IdentityServiceStub(channel)
    page = await identity.ListUsers(
        identity_pb.ListUsersRequest(page_size=1), metadata=bearer(token)
    )
    forged = with_cursor(page.next_page_token, [created, "x"])
    error = await refusal(
        identity.ListUsers(
            identity_pb.ListUsersRequest(page_size=1, page_token=forged), metadata=bearer(token)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


@pytest.mark.parametrize("cursor", [2**63, 2**70])
async def test_an_audit_page_token_beyond_the_sequence_range_is_invalid_argument(
    any_server: Server, cursor: int
) -> None:
    app, channel = any_server
    reader = bearer(await service_token(app, ("audit.read",)))
    audit = audit_grpc.AuditServiceStub(channel)
    page = await audit.ListAuditEvents(
        audit_pb.ListAuditEventsRequest(page_size=1), metadata=reader
    )
    forged = with_cursor(page.next_page_token, cursor)
    error = await refusal(
        audit.ListAuditEvents(
            audit_pb.ListAuditEventsRequest(page_size=1, page_token=forged), metadata=reader
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


@pytest.mark.parametrize(
    "endpoint",
    ["https://[", "https://[::1/authorize", "https://bank.example.com:99999/authorize"],
)
async def test_a_provider_endpoint_that_does_not_parse_is_invalid_argument(
    server: Server, endpoint: str
) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    request = provider_pb.CreateProviderRequest(
        provider_id="bank",
        provider=provider_pb.Provider(
            display_name="Bank",
            auth_type=provider_pb.AUTH_TYPE_OAUTH2,
            authorization_endpoint=endpoint,
            token_endpoint="https://bank.example.com/token",
            client_id="keyhold",
        ),
    )
    error = await refusal(
        provider_grpc.ProviderServiceStub(channel).CreateProvider(request, metadata=bearer(admin))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ENDPOINT_INVALID")
    assert error.bad_request is not None
    assert error.bad_request.field_violations[0].field == "provider.authorization_endpoint"


async def test_a_nul_character_in_any_text_field_is_invalid_argument(any_server: Server) -> None:
    """PostgreSQL cannot even compare text holding U+0000: each of these failed there."""
    app, channel = any_server
    admin = bearer((await signed_in(app, "admin@example.com", ("admin", "user")))[0])
    reader = bearer(await service_token(app, ("audit.read",)))
    identity = identity_grpc.IdentityServiceStub(channel)
    providers = provider_grpc.ProviderServiceStub(channel)
    calls = {
        "client_id": identity.CreateServiceToken(
            identity_pb.CreateServiceTokenRequest(client_id="c\x00", client_secret="s")
        ),
        "user_agent": identity.CreateSession(
            identity_pb.CreateSessionRequest(
                email="admin@example.com", password="p" * 12, user_agent="ua\x00"
            )
        ),
        "actor": audit_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_pb.ListAuditEventsRequest(actor="users/\x00"), metadata=reader
        ),
        "name": providers.GetConnection(
            provider_pb.GetConnectionRequest(name="connections/\x00"), metadata=admin
        ),
        "provider.client_id": providers.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id="bank",
                provider=provider_pb.Provider(
                    display_name="Bank",
                    auth_type=provider_pb.AUTH_TYPE_OAUTH2,
                    authorization_endpoint="https://bank.example.com/authorize",
                    token_endpoint="https://bank.example.com/token",
                    client_id="keyhold\x00",
                ),
            ),
            metadata=admin,
        ),
        "scopes": identity.CreateServiceAccount(
            identity_pb.CreateServiceAccountRequest(display_name="s", scopes=["a", "b\x00"]),
            metadata=admin,
        ),
    }
    for field, call in calls.items():
        error = await refusal(call)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "NUL_CHARACTER",
        ), field
        assert error.bad_request is not None
        assert error.bad_request.field_violations[0].field == field


@pytest.mark.parametrize("after", [2**63 - 1, 2**63 - 2])
async def test_a_stream_after_the_last_possible_sequence_is_invalid_argument(
    any_server: Server, after: int
) -> None:
    """Nothing can follow the BIGINT range's last sequence; asking for it once overflowed
    the database query (INTERNAL)."""
    app, channel = any_server
    reader = bearer(await service_token(app, ("audit.read",)))
    stream = audit_grpc.AuditServiceStub(channel).StreamAuditEvents(
        audit_pb.StreamAuditEventsRequest(after_sequence=after), metadata=reader
    )
    if after == 2**63 - 2:  # the last sequence that can still come: admitted, waits for it
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.read(), 0.5)
        stream.cancel()
        return
    error = await refusal(stream.read())
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SEQUENCE_INVALID")
    assert error.bad_request is not None
    assert error.bad_request.field_violations[0].field == "after_sequence"


@pytest.mark.parametrize(
    "number",
    ["\u00b2", "\uff11\uff12", "\u0661", "1\u0662", "\U0001d7d9", " 1", "1 ", "+1", "1_0"],
    ids=[
        "superscript",
        "full-width",
        "arabic-indic",
        "mixed",
        "math-bold",
        "lead",
        "trail",
        "+",
        "_",
    ],
)
async def test_an_audit_event_name_with_anything_but_ascii_digits_is_invalid_argument(
    any_server: Server, number: str
) -> None:
    app, channel = any_server
    reader = bearer(await service_token(app, ("audit.read",)))
    error = await refusal(
        audit_grpc.AuditServiceStub(channel).GetAuditEvent(
            audit_pb.GetAuditEventRequest(name=f"audit-events/{number}"), metadata=reader
        )
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "RESOURCE_NAME_INVALID",
    )


async def _signed(app: KeyholdServer, **claims: object) -> str:
    """An access token of a live service account with `claims` over genuine ones, signed
    with the server's own key (as an insider holding it, or a bug in the issuer, could)."""
    account, _ = await app.identity.service_accounts.create("extreme", [])
    signer = app.identity.key_ring.signer
    now = int(time.time())
    genuine: dict[str, object] = {
        "iss": app.settings.issuer,
        "aud": app.settings.audience,
        "sub": account.name,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j",
        "roles": [],
        "scope": "",
    }
    token = jwt.encode(
        {**genuine, **claims},
        signer.private_key,
        algorithm=signer.algorithm,
        headers={"kid": signer.key_id, "typ": "at+jwt"},
    )
    return with_low_s(token)  # canonical, as Keyhold signs


EXTREME_TIMES = {
    "exp-1e20": {"exp": 10**20},
    "exp-float-1e20": {"exp": 1e20},
    "exp-beyond-int64": {"exp": 2**64},
    "exp-after-9999": {"exp": 253402300800},
    "iat-negative": {"iat": -(10**20)},
    "iat-before-1970": {"iat": -1},
    "nbf-negative-huge": {"nbf": -(2**63) - 1},
    "exp-float": {"exp": 2_000_000_000.5},
    "exp-nan-string": {"exp": "NaN"},
    "exp-bool": {"exp": True},
    "iat-infinity-string": {"iat": "Infinity"},
}


@pytest.mark.parametrize("claims", EXTREME_TIMES.values(), ids=EXTREME_TIMES.keys())
async def test_a_signed_token_with_extreme_time_claims_authenticates_no_one(
    server: Server, claims: dict[str, object]
) -> None:
    app, channel = server
    identity = identity_grpc.IdentityServiceStub(channel)
    token = await _signed(app, **claims)
    error = await refusal(identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=bearer(token)))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED")
    introspector = bearer(await service_token(app, ("identity.introspect",)))
    answer = await identity.IntrospectToken(
        identity_pb.IntrospectTokenRequest(token=token), metadata=introspector
    )
    assert not answer.active


@pytest.mark.parametrize(
    "text",
    ["\x00", "a\x00b", "\ud800", "\udfff\ud800", "\x7f"],
    ids=["nul", "inner-nul", "surrogate", "pair-reversed", "del"],
)
async def test_a_page_token_cursor_holding_unstorable_text_is_invalid_argument(
    any_server: Server, text: str
) -> None:
    """Cursors are decoded from JSON, which spells NUL and lone surrogates as escapes;
    neither may reach a query (PostgreSQL refuses NUL, no driver encodes a surrogate)."""
    app, channel = any_server
    admin = bearer((await signed_in(app, "a@example.com", ("admin", "user")))[0])
    await signed_in(app, "b@example.com")
    identity = identity_grpc.IdentityServiceStub(channel)
    providers = provider_grpc.ProviderServiceStub(channel)
    for slug in ("bank", "card"):
        await providers.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id=slug,
                provider=provider_pb.Provider(
                    display_name=slug, auth_type=provider_pb.AUTH_TYPE_API_KEY
                ),
            ),
            metadata=admin,
        )
    users = await identity.ListUsers(identity_pb.ListUsersRequest(page_size=1), metadata=admin)
    listed = await providers.ListProviders(
        provider_pb.ListProvidersRequest(page_size=1), metadata=admin
    )
    calls = {
        "users": identity.ListUsers(
            identity_pb.ListUsersRequest(
                page_size=1,
                page_token=with_cursor(users.next_page_token, ["2020-01-01T00:00:00+00:00", text]),
            ),
            metadata=admin,
        ),
        "providers": providers.ListProviders(
            provider_pb.ListProvidersRequest(
                page_size=1, page_token=with_cursor(listed.next_page_token, text)
            ),
            metadata=admin,
        ),
    }
    for listing, call in calls.items():
        error = await refusal(call)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAGE_TOKEN_INVALID",
        ), listing


async def test_a_trailing_newline_makes_no_identifier(server: Server) -> None:
    """`$` also matches before a final newline: "bank\\n" passed as a provider id and
    "users/{id}\\n" as a name, a second spelling of the same resource."""
    app, channel = server
    admin, admin_name = await signed_in(app, "admin@example.com", ("admin", "user"))
    providers = provider_grpc.ProviderServiceStub(channel)
    identity = identity_grpc.IdentityServiceStub(channel)
    created = refusal(
        providers.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id="bank\n",
                provider=provider_pb.Provider(
                    display_name="Bank", auth_type=provider_pb.AUTH_TYPE_API_KEY
                ),
            ),
            metadata=bearer(admin),
        )
    )
    error = await created
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROVIDER_ID_INVALID")
    for call in (
        identity.GetUser(
            identity_pb.GetUserRequest(name=admin_name + "\n"), metadata=bearer(admin)
        ),
        providers.GetConnection(
            provider_pb.GetConnectionRequest(name="connections/abc\n"), metadata=bearer(admin)
        ),
    ):
        error = await refusal(call)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "RESOURCE_NAME_INVALID",
        )


@pytest.mark.parametrize(
    "claims",
    [{"sid": "s\x00"}, {"sid": "\ud800"}, {"sid": "s" * 5000}, {"jti": "j\x00"}, {"jti": 7}],
    ids=["sid-nul", "sid-surrogate", "sid-long", "jti-nul", "jti-number"],
)
async def test_a_signed_token_whose_ids_are_no_ids_authenticates_no_one(
    any_server: Server, claims: dict[str, object]
) -> None:
    """The session and token ids of a token signed with the server's own key are looked
    up and recorded: text no column can hold must not get that far."""
    app, channel = any_server
    genuine, _ = await signed_in(app, "a@example.com")
    identity = identity_grpc.IdentityServiceStub(channel)
    me = await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=bearer(genuine))
    session_id = me.session.removeprefix("sessions/")
    token = await _signed(app, **{"sub": me.subject, "sid": session_id, **claims})
    error = await refusal(identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=bearer(token)))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED")
