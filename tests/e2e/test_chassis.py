"""The server end to end through the generated stubs: health, the policy pipeline,
rich errors, request ids, rate limits and UNIMPLEMENTED for what is not built."""

from __future__ import annotations

import re

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.api.interceptor import PolicyInterceptor
from keyhold.api.policy import load_policies
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer
from keyhold.wiring.grpc_api import SERVICES
from tests.support.servers import bearer, service_token, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


async def user_token(app: KeyholdServer, roles: tuple[str, ...] = ("user",)) -> str:
    token, _ = await signed_in(app, f"{'-'.join(roles)}@example.com", roles)
    return token


async def a_service_token(app: KeyholdServer, scopes: tuple[str, ...] = ()) -> str:
    return await service_token(app, scopes)


async def test_health_serves_overall_and_each_service(server: Server) -> None:
    _, channel = server
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", *(service.full_name for service in SERVICES)]:
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_public_method_passes_without_a_token(server: Server) -> None:
    _, channel = server
    response = await pb_grpc.IdentityServiceStub(channel).GetJwks(pb.GetJwksRequest())
    assert len(response.keys) == 1
    assert response.keys[0].algorithm == "ES256"
    assert response.keys[0].key_type == "EC"


async def test_missing_token_is_unauthenticated_with_reason(server: Server) -> None:
    _, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_MISSING"
    assert error.error_info is not None
    assert error.error_info.domain == "keyhold.identity"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "CREDENTIALS_MALFORMED"),
        ("Bearer", "CREDENTIALS_MALFORMED"),
        ("Bearer not-a-jwt", "TOKEN_MALFORMED"),
        ("Bearer " + "a" * 9000, "TOKEN_TOO_LARGE"),
    ],
)
async def test_bad_credentials_are_unauthenticated(
    server: Server, header: str, reason: str
) -> None:
    _, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=(("authorization", header),)
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_metadata_beyond_the_configured_limit_is_refused_by_grpc(server: Server) -> None:
    _, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=(("authorization", "Bearer " + "a" * 20_000),)
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_valid_token_reaches_the_handler_with_its_principal(server: Server) -> None:
    app, channel = server
    response = await pb_grpc.IdentityServiceStub(channel).WhoAmI(
        pb.WhoAmIRequest(), metadata=bearer(await user_token(app, roles=("user", "admin")))
    )
    assert response.subject.startswith("users/")
    assert response.subject_type == pb.SUBJECT_TYPE_USER
    assert list(response.roles) == ["admin", "user"]
    assert response.session.startswith("sessions/")
    assert response.expire_time.seconds > 0


async def test_token_without_the_role_is_permission_denied(server: Server) -> None:
    app, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).ListUsers(
            pb.ListUsersRequest(), metadata=bearer(await user_token(app))
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")


async def test_admin_passes_the_role_check(server: Server) -> None:
    app, channel = server
    response = await pb_grpc.IdentityServiceStub(channel).ListUsers(
        pb.ListUsersRequest(), metadata=bearer(await user_token(app, roles=("admin",)))
    )
    assert [user.email for user in response.users] == ["admin@example.com"]


async def test_a_method_not_built_answers_unimplemented_after_the_pipeline(
    server: Server,
) -> None:
    """The generated base servicer raises NotImplementedError; behind the pipeline that
    becomes UNIMPLEMENTED with an ErrorInfo, once the caller passed authentication."""
    app, _ = server
    token = await user_token(app)
    interceptor = PolicyInterceptor(
        load_policies(SERVICES),
        app.api.admission,
    )
    base = provider_grpc.ProviderServiceServicer()  # nothing overridden
    handler = grpc.unary_unary_rpc_method_handler(base.ListProviders)
    wrapped = interceptor.wrap("/keyhold.provider.v1.ProviderService/ListProviders", handler)

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {token}"),)

        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

        def auth_context(self) -> dict[str, list[bytes]]:
            return {"transport_security_type": [b"insecure"]}

        def set_trailing_metadata(self, metadata: object) -> None:
            pass

        def set_code(self, code: object) -> None:  # the generated base class sets these
            pass

        def set_details(self, details: object) -> None:
            pass

        def code(self) -> None:  # read by the completion log
            return None

        async def abort(self, code: grpc.StatusCode, details: str, trailing: object) -> None:
            raise AbortedWith(code, details)

    with pytest.raises(AbortedWith) as caught:
        await wrapped.unary_unary(provider_pb.ListProvidersRequest(), Context())
    assert caught.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented" in caught.value.details


class AbortedWith(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


async def test_scope_is_required_and_granted(server: Server) -> None:
    app, channel = server
    provider = provider_grpc.ProviderServiceStub(channel)
    request = provider_pb.GetConnectionCredentialRequest(name="connections/c1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provider.GetConnectionCredential(request, metadata=bearer(await a_service_token(app)))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provider.GetConnectionCredential(
            request,
            metadata=bearer(await a_service_token(app, scopes=("provider.credentials.read",))),
        )
    assert rich_error(caught.value).reason == "CONNECTION_NOT_FOUND"  # past the scope check


async def test_streaming_method_passes_the_pipeline(server: Server) -> None:
    app, channel = server
    audit = audit_grpc.AuditServiceStub(channel)
    call = audit.StreamAuditEvents(audit_pb.StreamAuditEventsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    call = audit.StreamAuditEvents(
        audit_pb.StreamAuditEventsRequest(),
        metadata=bearer(await a_service_token(app, scopes=("audit.read",))),
    )
    first = await call.read()  # the denial above is already in the trail
    assert first.event.outcome == audit_pb.OUTCOME_DENIED
    call.cancel()


async def test_service_principal_is_refused_on_user_only_methods(server: Server) -> None:
    app, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provider_grpc.ProviderServiceStub(channel).ListProviders(
            provider_pb.ListProvidersRequest(), metadata=bearer(await a_service_token(app))
        )
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "PRINCIPAL_TYPE_NOT_ALLOWED"


async def test_owner_check_on_user_resources(server: Server) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    access, name = await signed_in(app)
    token = bearer(access)
    for own in ("users/me", name):
        response = await identity.GetUser(pb.GetUserRequest(name=own), metadata=token)
        assert response.user.name == name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetUser(pb.GetUserRequest(name="users/u2"), metadata=token)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_RESOURCE_OWNER")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetUser(pb.GetUserRequest(name=""), metadata=token)
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.bad_request is not None
    assert error.bad_request.field_violations[0].field == "name"


async def test_owner_check_reads_nested_fields(server: Server) -> None:
    app, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).UpdateUser(
            pb.UpdateUserRequest(user=pb.User(name="users/u2")),
            metadata=bearer(await user_token(app)),
        )
    assert rich_error(caught.value).reason == "NOT_RESOURCE_OWNER"


async def test_resources_without_an_owner_resolver_are_refused_to_non_admins(
    server: Server,
) -> None:
    app, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provider_grpc.ProviderServiceStub(channel).GetConnection(
            provider_pb.GetConnectionRequest(name="connections/c1"),
            metadata=bearer(await user_token(app)),
        )
    assert rich_error(caught.value).reason == "NOT_RESOURCE_OWNER"


async def test_request_id_is_echoed_or_generated(server: Server) -> None:
    _, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    call = identity.GetJwks(pb.GetJwksRequest(), metadata=(("x-request-id", "req-123"),))
    await call
    assert ("x-request-id", "req-123") in list(await call.trailing_metadata())
    call = identity.GetJwks(pb.GetJwksRequest(), metadata=(("x-request-id", "bad id"),))
    await call
    generated = dict(await call.trailing_metadata())["x-request-id"]
    assert generated != "bad id"
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", generated)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.WhoAmI(pb.WhoAmIRequest(), metadata=(("x-request-id", "req-9"),))
    assert rich_error(caught.value).trailing["x-request-id"] == "req-9"


async def test_rate_limit_returns_resource_exhausted_with_retry_info(server: Server) -> None:
    _, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    # ResetPassword: 10/minute per peer. The first ten pass the limiter (and are refused
    # by the handler for their unknown token); the eleventh is throttled.
    for _ in range(10):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.ResetPassword(pb.ResetPasswordRequest(reset_token="t"))
        assert rich_error(caught.value).reason == "RESET_TOKEN_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.ResetPassword(pb.ResetPasswordRequest(reset_token="t"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_info is not None
    assert 0 < error.retry_info.retry_delay.seconds <= 60
    assert 1 <= int(error.trailing["retry-after"]) <= 60


async def test_rate_limit_by_request_field_is_per_value(server: Server) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    token = bearer(await a_service_token(app, scopes=("identity.password_reset",)))
    # CreatePasswordReset: 5/minute per email, trimmed and lower-cased.
    for email in [
        "a@example.com",
        " A@Example.com ",
        "a@example.com",
        "a@example.com",
        "a@example.com",
    ]:
        response = await identity.CreatePasswordReset(
            pb.CreatePasswordResetRequest(email=email), metadata=token
        )
        assert response.reset_token == ""  # no such user
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreatePasswordReset(
            pb.CreatePasswordResetRequest(email="a@example.com"), metadata=token
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await identity.CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="b@example.com"), metadata=token
    )


async def test_public_method_ignores_an_invalid_token(server: Server) -> None:
    _, channel = server
    response = await pb_grpc.IdentityServiceStub(channel).GetJwks(
        pb.GetJwksRequest(), metadata=(("authorization", "Bearer expired-or-garbage"),)
    )
    assert response.keys
