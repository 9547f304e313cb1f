"""The production log (JSON lines): one completion line per RPC with who, what, how it
ended and how long it took, and never a secret, through a flow that handles every kind of
secret Keyhold sees."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import structlog

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.log_config import configure_logging
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from tests.e2e.test_providers import World
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import PASSWORD, bearer, running_server, settings_for, signed_in

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
FIELDS = {
    "method",
    "code",
    "duration_ms",
    "peer",
    "principal",
    "request_id",
    "trace_id",
    "span_id",
}


class Tagged(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Gives every call a request id of its own and remembers (request id, method)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        request_id = f"test-{len(self.sent)}"
        self.sent.append((request_id, method))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("x-request-id", request_id))
        tagged = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(tagged, request)


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """The production configuration (JSON lines), written to a file instead of stderr."""
    path = tmp_path / "keyhold.log"
    with path.open("wb") as output:
        configure_logging("json", "info", output=output, cache_loggers=False)
        try:
            yield path
        finally:
            structlog.reset_defaults()


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as running:
        yield running


async def _refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_one_line_per_rpc_and_no_secret_in_the_log(
    json_log: Path, tmp_path: Path, provider: FakeOAuthProvider
) -> None:
    tagged = Tagged()
    # No retry grace: presenting a spent refresh token again is reuse at once.
    settings = settings_for(tmp_path / "data", refresh_reuse_grace_seconds=0)
    async with running_server(settings) as (app, _):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", interceptors=[tagged])
        identity = pb_grpc.IdentityServiceStub(channel)
        secrets = [PASSWORD]
        email = "ada@example.com"

        await identity.CreateUser(
            pb.CreateUserRequest(email=email, password=PASSWORD, display_name="Ada")
        )
        wrong = "not the right passphrase"
        secrets.append(wrong)
        assert (
            await _refused(
                identity.CreateSession(pb.CreateSessionRequest(email=email, password=wrong))
            )
            is grpc.StatusCode.UNAUTHENTICATED
        )
        first = await identity.CreateSession(
            pb.CreateSessionRequest(email=email, password=PASSWORD)
        )
        refreshed = await identity.RefreshSession(
            pb.RefreshSessionRequest(refresh_token=first.refresh_token)
        )
        secrets += [first.access_token, first.refresh_token]
        secrets += [refreshed.access_token, refreshed.refresh_token]
        await _refused(
            identity.RefreshSession(pb.RefreshSessionRequest(refresh_token=first.refresh_token))
        )
        session = await identity.CreateSession(
            pb.CreateSessionRequest(email=email, password=PASSWORD)
        )
        secrets += [session.access_token, session.refresh_token]
        traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
        await identity.WhoAmI(
            pb.WhoAmIRequest(),
            metadata=(*bearer(session.access_token), ("traceparent", traceparent)),
        )
        whoami_id = tagged.sent[-1][0]

        admin_token, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
        secrets.append(admin_token)
        account = await identity.CreateServiceAccount(
            pb.CreateServiceAccountRequest(
                display_name="Mailer",
                scopes=["identity.password_reset", "provider.credentials.read"],
            ),
            metadata=bearer(admin_token),
        )
        secrets.append(account.client_secret)
        service = await identity.CreateServiceToken(
            pb.CreateServiceTokenRequest(
                client_id=account.service_account.client_id, client_secret=account.client_secret
            )
        )
        secrets.append(service.access_token)
        reset = await identity.CreatePasswordReset(
            pb.CreatePasswordResetRequest(email=email), metadata=bearer(service.access_token)
        )
        reset_id = tagged.sent[-1][0]
        final_password = "the final passphrase here"
        secrets += [reset.reset_token, final_password]
        await identity.ResetPassword(
            pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password=final_password)
        )
        last = await identity.CreateSession(
            pb.CreateSessionRequest(email=email, password=final_password)
        )
        secrets += [last.access_token, last.refresh_token]
        await _refused(
            identity.WhoAmI(pb.WhoAmIRequest(), metadata=(("authorization", f"Bearer {PASSWORD}"),))
        )
        bogus_id = tagged.sent[-1][0]

        world = World(app, channel)
        world.admin, world.user = bearer(admin_token), bearer(last.access_token)
        world.reader = bearer(service.access_token)
        await world.create_oauth_provider(provider)
        connection = await world.connect(provider)
        upstream = await world.credential(connection.name)
        await world.stub.RefreshConnection(
            provider_pb.RefreshConnectionRequest(name=connection.name), metadata=world.user
        )
        api_key = "the-secret-api-key-42"
        await world.stub.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id="broker",
                provider=provider_pb.Provider(
                    display_name="Broker", auth_type=provider_pb.AUTH_TYPE_API_KEY
                ),
            ),
            metadata=world.admin,
        )
        keyed = await world.stub.StartConnection(
            provider_pb.StartConnectionRequest(provider="providers/broker", api_key=api_key),
            metadata=world.user,
        )
        assert (await world.credential(keyed.connection.name)).access_token == api_key
        secrets += [api_key, provider.client_secret or "", upstream.access_token]
        secrets += provider.issued_access_tokens + provider.issued_refresh_tokens
        exchange = next(r for r in provider.history if r.form.get("code_verifier"))
        secrets += [exchange.form["code_verifier"], exchange.form["code"]]
        await channel.close()

    text = await asyncio.to_thread(json_log.read_text)
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    completions = [line for line in lines if line["event"] == "rpc_completed"]

    assert sorted((c["request_id"], c["method"]) for c in completions) == sorted(tagged.sent)
    assert len(tagged.sent) >= 20
    for line in completions:
        assert line.keys() >= FIELDS
        assert line["level"] == "info"
        assert line["duration_ms"] >= 0
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert re.fullmatch(r"users/\w+|service-accounts/\w+|anonymous", line["principal"])
    by_id = {line["request_id"]: line for line in completions}
    assert by_id[whoami_id]["principal"] == f"users/{session.session.user.split('/')[1]}"
    assert (by_id[whoami_id]["trace_id"], by_id[whoami_id]["span_id"]) == (
        TRACE_ID,
        PARENT_SPAN_ID,
    )
    assert by_id[reset_id]["principal"] == account.service_account.name
    assert (by_id[bogus_id]["code"], by_id[bogus_id]["principal"]) == (
        "UNAUTHENTICATED",
        "anonymous",
    )
    codes = {line["code"] for line in completions}
    assert {"OK", "UNAUTHENTICATED"} <= codes

    assert len(secrets) >= 20
    for secret in secrets:
        assert len(secret) >= 8
        assert secret not in text, secret[:6]
        for part in secret.split("."):  # no JWT segment either
            assert len(part) < 16 or part not in text


def _mask_peer(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """An operator's redaction processor: no client address in the log."""
    if "peer" in event_dict:
        event_dict["peer"] = "masked"
    return event_dict


async def test_every_processor_in_the_chain_applies_to_the_per_rpc_line(
    json_log: Path, tmp_path: Path
) -> None:
    """The per-RPC line is a structlog line like any other: a processor added to the
    chain that configure_logging set up reaches it."""
    structlog.get_config()["processors"].insert(0, _mask_peer)  # as capture_logs adds its own
    async with running_server(settings_for(tmp_path / "data")) as (_, channel):
        identity = pb_grpc.IdentityServiceStub(channel)
        await identity.GetJwks(pb.GetJwksRequest())
        await _refused(identity.WhoAmI(pb.WhoAmIRequest()))
    text = await asyncio.to_thread(json_log.read_text)
    completions = [
        line for line in map(json.loads, text.splitlines()) if line["event"] == "rpc_completed"
    ]
    assert [line["method"].rpartition("/")[2] for line in completions] == ["GetJwks", "WhoAmI"]
    assert {line["peer"] for line in completions} == {"masked"}


async def test_an_http_request_logs_one_line_like_its_grpc_twin(
    tmp_path: Path, json_log: Path
) -> None:
    settings = settings_for(tmp_path, http_address="127.0.0.1:0")
    async with running_server(settings) as (app, _):
        account, secret = await app.identity.service_accounts.create("http", ["audit.read"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
            await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(account.client_id, secret),
                headers={"x-request-id": "http-line-1"},
            )
    text = await asyncio.to_thread(json_log.read_text)
    lines = [json.loads(line) for line in text.splitlines()]
    (line,) = [line for line in lines if line.get("request_id") == "http-line-1"]
    assert line.keys() >= FIELDS
    assert (line["event"], line["method"], line["code"], line["http_status"]) == (
        "rpc_completed",
        "/keyhold.identity.v1.IdentityService/CreateServiceToken",
        "OK",
        200,
    )
    assert line["principal"] == "anonymous"  # the token endpoint is public; the client is audited
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert secret not in text
