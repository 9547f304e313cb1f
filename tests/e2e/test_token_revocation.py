"""RevokeToken (RFC 7009 semantics) over gRPC and `POST /oauth2/revoke`: a refresh token
or a user's access token ends its session at once; any other token gets the same
answer; a service account's token is refused as not revocable. Each is audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from keyhold.domain.audit.events import AuditFilter
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import (
    PASSWORD,
    bearer,
    running_server,
    service_token,
    settings_for,
    signed_in,
)
from tests.support.status import rich_error

Started = tuple[KeyholdServer, grpc.aio.Channel]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    async with running_server(settings_for(tmp_path, http_address="127.0.0.1:0")) as pair:
        yield pair


async def _whoami_reason(channel: grpc.aio.Channel, token: str) -> str | None:
    try:
        await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=bearer(token)
        )
    except grpc.aio.AioRpcError as error:
        return rich_error(error).reason
    return None


async def test_a_refresh_token_ends_its_session(started: Started) -> None:
    app, channel = started
    await signed_in(app, "ada@example.com")
    login = await app.identity.sessions.login("ada@example.com", PASSWORD, "t")
    assert await _whoami_reason(channel, login.access_token.token) is None
    await pb_grpc.IdentityServiceStub(channel).RevokeToken(
        pb.RevokeTokenRequest(token=login.refresh_token)
    )
    assert await _whoami_reason(channel, login.access_token.token) == "SESSION_REVOKED"
    events = await app.audit.trail.newest_first(
        AuditFilter(action="identity.token.revoke"), None, 5
    )
    outcome = next(e.record for e in events if e.record.outcome.value == "succeeded")
    assert outcome.resource_name == f"sessions/{login.session.id}"
    assert outcome.details == {"token_type": "refresh_token", "ended": "true"}


async def test_an_access_token_ends_its_session_over_http(started: Started) -> None:
    app, channel = started
    token, _ = await signed_in(app, "ada@example.com")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        answer = await client.post("/oauth2/revoke", data={"token": token})
        again = await client.post("/oauth2/revoke", data={"token": token})
        unknown = await client.post("/oauth2/revoke", data={"token": "khr_never-issued"})
        garbage = await client.post("/oauth2/revoke", data={"token": "a.b.c"})
        missing = await client.post("/oauth2/revoke", data={})
    assert [a.status_code for a in (answer, again, unknown, garbage)] == [200] * 4
    assert await _whoami_reason(channel, token) == "SESSION_REVOKED"
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")


async def test_a_service_accounts_token_is_not_revocable_alone(started: Started) -> None:
    app, channel = started
    token = await service_token(app, ("audit.read",), "svc")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).RevokeToken(pb.RevokeTokenRequest(token=token))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOKEN_TYPE_UNSUPPORTED",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        answer = await client.post("/oauth2/revoke", data={"token": token})
    assert (answer.status_code, answer.json()["error"]) == (400, "unsupported_token_type")
    assert await _whoami_reason(channel, token) is None
