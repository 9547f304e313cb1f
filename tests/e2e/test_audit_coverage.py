"""What the audit trail records beyond the handlers' own actions: calls refused by a rate
limit (without a flood flooding the trail), the resource a refused ownership check
protected, and administrators' reads of other people's data."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, running_server, service_token, settings_for, signed_in

Server = tuple[KeyholdServer, grpc.aio.Channel]
RESET = "/keyhold.identity.v1.IdentityService/ResetPassword"


async def _records(app: KeyholdServer, action: str) -> list[dict[str, object]]:
    async with app.platform.database.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT outcome, actor_id, resource_name, reason, details FROM audit_events "
                "WHERE action = :action ORDER BY sequence"
            ),
            {"action": action},
        )
        return [dict(row._mapping) for row in rows]


async def _reset_until_refused(channel: grpc.aio.Channel, extra: int) -> None:
    identity = pb_grpc.IdentityServiceStub(channel)
    refused = 0
    for _ in range(100):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.ResetPassword(
                pb.ResetPasswordRequest(reset_token="rst_not-a-token", new_password="x" * 20)
            )
        if caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused += 1
            if refused > extra:
                return
    raise AssertionError("the rate limit never refused")


async def test_a_rate_limited_call_is_recorded_once_per_key_and_window_then_counted(
    tmp_path: Path,
) -> None:
    async with running_server(settings_for(tmp_path)) as (app, channel):
        await _reset_until_refused(channel, extra=40)
        records = await _records(app, "access.rate_limited")
        assert len(records) == 1
        (single,) = records
        assert (single["outcome"], single["reason"]) == ("denied", "RATE_LIMITED")
        assert single["resource_name"] == RESET
        assert '"limit":"10/minute"' in str(single["details"]).replace(" ", "")
    # Stopping wrote the window's count; the same data directory, served again, shows it.
    async with running_server(settings_for(tmp_path)) as (reopened, _):
        records = await _records(reopened, "access.rate_limited")
    assert len(records) == 2
    summary = records[1]
    assert summary["actor_id"] == "system/cli"
    assert '"refusals_not_recorded_singly":"40"' in str(summary["details"]).replace(" ", "")


async def test_a_refused_ownership_check_records_the_resource_it_protected(
    server: Server,
) -> None:
    app, channel = server
    access, _ = await signed_in(app)
    with pytest.raises(grpc.aio.AioRpcError):
        await provider_grpc.ProviderServiceStub(channel).GetConnection(
            provider_pb.GetConnectionRequest(name="connections/someone-elses"),
            metadata=bearer(access),
        )
    (denied,) = await _records(app, "provider.connection.get")
    assert (denied["outcome"], denied["reason"]) == ("denied", "NOT_RESOURCE_OWNER")
    assert denied["resource_name"] == "connections/someone-elses"


async def test_an_admin_reading_another_users_data_is_recorded_and_own_reads_are_not(
    server: Server,
) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    user_access, user_name = await signed_in(app, "user@example.com")
    admin_access, admin_name = await signed_in(app, "admin@example.com", ("admin",))
    await identity.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(user_access))
    await identity.ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(user_access)
    )
    assert await _records(app, "identity.user.get") == []
    assert await _records(app, "identity.sessions.list") == []

    admin = bearer(admin_access)
    await identity.GetUser(pb.GetUserRequest(name=user_name), metadata=admin)
    await identity.ListUsers(pb.ListUsersRequest(), metadata=admin)
    await identity.ListSessions(pb.ListSessionsRequest(parent=user_name), metadata=admin)
    for action in ("identity.user.get", "identity.users.list", "identity.sessions.list"):
        outcomes = [(r["outcome"], r["actor_id"]) for r in await _records(app, action)]
        assert outcomes == [("attempted", admin_name), ("succeeded", admin_name)], action
    (_, got) = await _records(app, "identity.user.get")
    assert got["resource_name"] == user_name


async def test_a_person_introspecting_another_principals_active_token_is_recorded(
    server: Server,
) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    user_access, user_name = await signed_in(app)
    admin_access, admin_name = await signed_in(app, "admin@example.com", ("admin",))
    inactive = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token="not-a-token"), metadata=bearer(admin_access)
    )
    assert not inactive.active
    assert await _records(app, "identity.token.introspect") == []
    active = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=user_access), metadata=bearer(admin_access)
    )
    assert active.active
    records = await _records(app, "identity.token.introspect")
    assert [(r["outcome"], r["actor_id"]) for r in records] == [
        ("attempted", admin_name),
        ("succeeded", admin_name),
    ]
    assert records[1]["resource_name"] == f"tokens/{active.token_id}"
    assert user_name in str(records[1]["details"])


async def test_a_services_introspection_is_not_recorded_one_by_one(server: Server) -> None:
    app, channel = server
    user_access, _ = await signed_in(app)
    gateway = bearer(await service_token(app, ("identity.introspect",), "gateway"))
    response = await pb_grpc.IdentityServiceStub(channel).IntrospectToken(
        pb.IntrospectTokenRequest(token=user_access), metadata=gateway
    )
    assert response.active
    assert await _records(app, "identity.token.introspect") == []
