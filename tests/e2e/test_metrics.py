"""Prometheus metrics scraped over HTTP from `KEYHOLD_METRICS_ADDRESS`: RPCs by method and
code, latency, rate limiting, lockouts, tokens, refresh-token reuse, audit appends,
provider refreshes and circuit breakers; one registry per server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.server import KeyholdServer
from keyhold.settings import Settings
from tests.e2e.test_providers import World
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import PASSWORD, running_server, settings_for

IDENTITY = "/keyhold.identity.v1.IdentityService/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as running:
        yield running


async def scrape(app: KeyholdServer) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{app.metrics_port}/metrics")
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def refused(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


def with_metrics(data_dir: Path, **overrides: object) -> Settings:
    return settings_for(data_dir, metrics_address="127.0.0.1:0", **overrides)


async def test_the_scraped_counters_follow_what_happened(
    tmp_path: Path, provider: FakeOAuthProvider
) -> None:
    # No retry grace: presenting a spent refresh token again is reuse at once.
    settings = with_metrics(
        tmp_path,
        lockout_threshold=2,
        provider_retries=0,
        provider_breaker_threshold=1,
        refresh_reuse_grace_seconds=0,
    )
    async with running_server(settings) as (app, channel):
        identity = pb_grpc.IdentityServiceStub(channel)
        email = "grace@example.com"
        await identity.CreateUser(
            pb.CreateUserRequest(email=email, password=PASSWORD, display_name="Ada")
        )
        before = await scrape(app)

        for _ in range(2):
            request = pb.CreateSessionRequest(email="eve@example.com", password=PASSWORD)
            assert await refused(identity.CreateSession(request)) is grpc.StatusCode.UNAUTHENTICATED
        locked = pb.CreateSessionRequest(email="eve@example.com", password=PASSWORD)
        assert await refused(identity.CreateSession(locked)) is grpc.StatusCode.RESOURCE_EXHAUSTED
        session = await identity.CreateSession(
            pb.CreateSessionRequest(email=email, password=PASSWORD)
        )
        await identity.RefreshSession(pb.RefreshSessionRequest(refresh_token=session.refresh_token))
        spent = pb.RefreshSessionRequest(refresh_token=session.refresh_token)
        assert await refused(identity.RefreshSession(spent)) is grpc.StatusCode.UNAUTHENTICATED
        resets = [
            await refused(identity.ResetPassword(pb.ResetPasswordRequest(reset_token="t")))
            for _ in range(11)
        ]
        assert resets.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 1  # 10/minute per peer

        world = await World(app, channel).setup()  # two logins, a service token: not RPCs
        await world.create_oauth_provider(provider)
        connection = await world.connect(provider)
        refresh = provider_pb.RefreshConnectionRequest(name=connection.name)
        await world.stub.RefreshConnection(refresh, metadata=world.user)
        provider.fail_next("token", status=503)
        assert (
            await refused(world.stub.RefreshConnection(refresh, metadata=world.user))
            is grpc.StatusCode.UNAVAILABLE
        )

        after = await scrape(app)
        async with app.platform.database.engine.connect() as db:
            audit_rows = (await db.execute(text("SELECT count(*) FROM audit_events"))).scalar_one()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    handled = "keyhold_rpc_handled_total"
    method = IDENTITY + "CreateSession"
    assert delta(handled, method=method, code="OK") == 1
    assert delta(handled, method=method, code="UNAUTHENTICATED") == 2
    assert delta(handled, method=method, code="RESOURCE_EXHAUSTED") == 1
    assert delta("keyhold_rpc_duration_seconds_count", method=method) == 4
    assert delta("keyhold_rpc_duration_seconds_sum", method=method) > 0
    assert delta("keyhold_rpc_duration_seconds_bucket", method=method, le="+Inf") == 4
    reset = IDENTITY + "ResetPassword"
    assert delta(handled, method=reset, code="INVALID_ARGUMENT") == 10
    assert delta("keyhold_rate_limit_rejections_total", method=reset) == 1
    assert value(after, "keyhold_rate_limit_storage_failures_total") == 0
    assert delta("keyhold_login_lockouts_total", scope="account") == 1
    # login + refresh by RPC, two logins by the use case; one client-credentials grant
    assert delta("keyhold_tokens_issued_total", kind="access") == 4
    assert delta("keyhold_tokens_issued_total", kind="refresh") == 4
    assert delta("keyhold_tokens_issued_total", kind="service") == 1
    assert delta("keyhold_refresh_token_reuse_detected_total") == 1
    refreshes = "keyhold_provider_refreshes_total"
    assert delta(refreshes, provider="bank", outcome="succeeded") == 1
    assert delta(refreshes, provider="bank", outcome="unreachable") == 1
    circuit = "keyhold_provider_circuit_state"
    assert value(after, circuit, provider="bank", state="open") == 1
    assert value(after, circuit, provider="bank", state="closed") == 0
    appended = sum(
        count for (name, _), count in after.items() if name == "keyhold_audit_appends_total"
    )
    assert appended == audit_rows > 0
    assert value(after, "keyhold_audit_appends_total", outcome="denied") >= 2


async def test_each_server_counts_its_own_calls_and_its_endpoint_stops_with_it(
    tmp_path: Path,
) -> None:
    unreachable_limits = with_metrics(tmp_path / "b", redis_url="redis://127.0.0.1:1/0")
    async with (
        running_server(with_metrics(tmp_path / "a")) as (first, first_channel),
        running_server(unreachable_limits) as (second, second_channel),
    ):
        assert first.metrics_port != second.metrics_port
        for _ in range(3):
            await refused(
                pb_grpc.IdentityServiceStub(second_channel).ResetPassword(
                    pb.ResetPasswordRequest(reset_token="t")
                )
            )
        await refused(
            pb_grpc.IdentityServiceStub(first_channel).WhoAmI(pb.WhoAmIRequest(), timeout=5)
        )
        one, two = await scrape(first), await scrape(second)
        port = second.metrics_port
    reset, whoami = IDENTITY + "ResetPassword", IDENTITY + "WhoAmI"
    handled = "keyhold_rpc_handled_total"
    assert value(one, handled, method=reset, code="INVALID_ARGUMENT") == 0
    assert value(two, handled, method=reset, code="INVALID_ARGUMENT") == 3
    assert value(one, handled, method=whoami, code="UNAUTHENTICATED") == 1
    assert value(two, handled, method=whoami, code="UNAUTHENTICATED") == 0
    assert value(two, "keyhold_rate_limit_storage_failures_total") == 3
    assert value(one, "keyhold_rate_limit_storage_failures_total") == 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")


async def test_no_metrics_endpoint_by_default(server: tuple[KeyholdServer, object]) -> None:
    app, _ = server
    assert app.settings.metrics_address is None
    assert app.api.metrics is None
    assert app.metrics_port == 0


def test_the_metrics_address_is_validated(tmp_path: Path) -> None:
    assert settings_for(tmp_path, metrics_address="").metrics_address is None
    assert settings_for(tmp_path, metrics_address="[::1]:9464").metrics_address == "[::1]:9464"
    with pytest.raises(ValueError, match="host:port"):
        settings_for(tmp_path, metrics_address="9464")


async def test_http_endpoints_count_under_their_grpc_twins(tmp_path: Path) -> None:
    settings = with_metrics(tmp_path, http_address="127.0.0.1:0")
    async with running_server(settings) as (app, _):
        account, secret = await app.identity.service_accounts.create("http", ["audit.read"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
            ok = await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(account.client_id, secret),
                headers={"x-request-id": "metrics-probe-1"},
            )
            await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(account.client_id, "khs_wrong"),
            )
        samples = await scrape(app)
    method = "/keyhold.identity.v1.IdentityService/CreateServiceToken"
    assert ok.headers["x-request-id"] == "metrics-probe-1"
    assert value(samples, "keyhold_rpc_handled_total", method=method, code="OK") == 1
    assert value(samples, "keyhold_rpc_handled_total", method=method, code="UNAUTHENTICATED") == 1
