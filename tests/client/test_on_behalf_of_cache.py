"""OnBehalfOf: exchanged tokens cached per user token and audience in a bounded LRU,
one request for concurrent callers, renewal near expiry, failures not cached, and one
retry after Keyhold refuses the service's own token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from keyhold.application.identity.api_resources import Definition
from keyhold.client import OnBehalfOf, ServiceAccountCredentials
from keyhold.server import KeyholdServer
from tests.client.fake_keyhold import FakeIdentity, fake_keyhold
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error

REPORTS = Definition(
    "Reports",
    "reports.internal",
    {"reports.read": "read reports", "reports.write": "write reports"},
    {"reports:viewer": frozenset({"reports.read"})},
)
USER = "ada@example.com"


@dataclass
class Front:
    app: KeyholdServer
    channel: grpc.aio.Channel
    credentials: ServiceAccountCredentials
    user_token: str

    def exchanger(self, **options: Any) -> OnBehalfOf:
        on_behalf_of = OnBehalfOf(self.credentials, "reports.internal", **options)
        on_behalf_of.bind(self.channel)
        return on_behalf_of

    async def another_user_token(self) -> str:
        """The same user signed in again: another session, another token."""
        result = await self.app.identity.sessions.login(USER, PASSWORD, "tests")
        return result.access_token.token


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    """Keyhold with the API resource `reports`, a user whose role grants
    `reports.read` there, and the service `front` allowed to exchange for it."""
    async with running_server(settings_for(tmp_path)) as (app, channel):
        resources = app.identity.api_resources
        await resources.create("reports", REPORTS)
        user_token, user = await signed_in(app, USER)
        await resources.grant_roles(user, "api-resources/reports", ["reports:viewer"])
        account, secret = await app.identity.service_accounts.create("front", [])
        await resources.set_exchange_grant(account.name, "api-resources/reports", ["reports.read"])
        credentials = ServiceAccountCredentials(account.client_id, secret)
        credentials.bind(channel)
        yield Front(app, channel, credentials, user_token)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_a_user_token_is_exchanged_once_and_then_served_from_the_cache(
    front: Front,
) -> None:
    on_behalf_of = front.exchanger()
    first = await on_behalf_of.token_for(front.user_token)
    assert await on_behalf_of.token_for(front.user_token) == first
    assert on_behalf_of.requests == 1
    claims, user = _claims(first), _claims(front.user_token)
    assert (claims["sub"], claims["aud"], claims["sid"]) == (
        user["sub"],
        "reports.internal",
        user["sid"],
    )
    other = await front.another_user_token()
    assert _claims(await on_behalf_of.token_for(other))["sid"] == _claims(other)["sid"]
    assert on_behalf_of.requests == 2
    assert len(on_behalf_of) == 2


async def test_the_cache_holds_at_most_max_entries_dropping_the_least_recently_used(
    front: Front,
) -> None:
    on_behalf_of = front.exchanger(max_entries=2)
    one, two, three = front.user_token, *[await front.another_user_token() for _ in range(2)]
    await on_behalf_of.token_for(one)
    await on_behalf_of.token_for(two)
    await on_behalf_of.token_for(one)  # `two` is now the least recently used
    await on_behalf_of.token_for(three)
    assert (len(on_behalf_of), on_behalf_of.requests) == (2, 3)
    await on_behalf_of.token_for(one)
    await on_behalf_of.token_for(three)
    assert on_behalf_of.requests == 3
    await on_behalf_of.token_for(two)  # dropped: exchanged again
    assert (len(on_behalf_of), on_behalf_of.requests) == (2, 4)


async def test_concurrent_calls_for_one_user_token_make_one_request(front: Front) -> None:
    on_behalf_of = front.exchanger()
    tokens = await asyncio.gather(*(on_behalf_of.token_for(front.user_token) for _ in range(50)))
    assert len(set(tokens)) == 1
    assert on_behalf_of.requests == 1


async def test_a_token_near_its_expiry_is_exchanged_again(front: Front) -> None:
    now = [0.0]
    on_behalf_of = front.exchanger(renew_before_seconds=30, monotonic=lambda: now[0])
    exchanged = _claims(await on_behalf_of.token_for(front.user_token))
    lifetime = exchanged["exp"] - exchanged["iat"]
    now[0] = lifetime - 32  # more than 30 s to go, whatever part of a second `iat` dropped
    await on_behalf_of.token_for(front.user_token)
    assert on_behalf_of.requests == 1
    now[0] = lifetime - 29  # inside the renewal margin
    await on_behalf_of.token_for(front.user_token)
    assert on_behalf_of.requests == 2


async def test_a_token_that_expires_within_the_margin_is_not_cached(front: Front) -> None:
    on_behalf_of = front.exchanger(renew_before_seconds=24 * 3600)
    await on_behalf_of.token_for(front.user_token)
    await on_behalf_of.token_for(front.user_token)
    assert (on_behalf_of.requests, len(on_behalf_of)) == (2, 0)


async def test_refusals_propagate_and_are_not_cached(front: Front) -> None:
    on_behalf_of = front.exchanger()
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await on_behalf_of.token_for("not-a-token")
        assert rich_error(caught.value).reason == "SUBJECT_TOKEN_INVALID"
    assert (on_behalf_of.requests, len(on_behalf_of)) == (2, 0)
    beyond = front.exchanger(scopes=["reports.write"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await beyond.token_for(front.user_token)
    assert rich_error(caught.value).reason == "SCOPE_NOT_GRANTED"


async def _exchanger(servicer: FakeIdentity, channel: grpc.aio.Channel, **options: Any) -> Any:
    credentials = ServiceAccountCredentials("khc_front", "khs_secret")
    credentials.bind(channel)
    on_behalf_of = OnBehalfOf(credentials, "reports.internal", **options)
    on_behalf_of.bind(channel)
    return on_behalf_of


async def test_a_refused_service_token_is_renewed_and_the_exchange_retried_once() -> None:
    servicer = FakeIdentity()
    servicer.refused = {"service-1"}
    async with fake_keyhold(servicer) as channel:
        on_behalf_of = await _exchanger(servicer, channel)
        assert (await on_behalf_of.token_for("user-1")).startswith("user-1@reports.internal")
        assert [bearer for _, bearer in servicer.exchanges] == ["service-1", "service-2"]
        servicer.refused = {"service-2", "service-3"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await on_behalf_of.token_for("user-2")
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert [bearer for _, bearer in servicer.exchanges][2:] == ["service-2", "service-3"]
    assert len(servicer.token_requests) == 3


async def test_callers_refused_together_renew_the_service_token_once() -> None:
    servicer = FakeIdentity()
    servicer.refused = {"service-1"}
    async with fake_keyhold(servicer) as channel:
        on_behalf_of = await _exchanger(servicer, channel)
        await asyncio.gather(*(on_behalf_of.token_for(f"user-{n}") for n in range(5)))
    assert len(servicer.token_requests) == 2


async def test_one_caller_cancelled_does_not_cancel_the_shared_request() -> None:
    servicer = FakeIdentity()
    servicer.gate.clear()
    async with fake_keyhold(servicer) as channel:
        on_behalf_of = await _exchanger(servicer, channel)
        impatient = asyncio.create_task(on_behalf_of.token_for("user-1"))
        patient = asyncio.create_task(on_behalf_of.token_for("user-1"))
        await servicer.exchanges_received(1)
        impatient.cancel()
        servicer.gate.set()
        assert (await patient).startswith("user-1@")
        assert impatient.cancelled()
    assert len(servicer.exchanges) == 1


async def test_requests_shared_at_once_are_bounded_too() -> None:
    """With one shared request under way, a call for another user token makes its own."""
    servicer = FakeIdentity()
    servicer.gate.clear()
    async with fake_keyhold(servicer) as channel:
        on_behalf_of = await _exchanger(servicer, channel, max_entries=1)
        calls = [
            asyncio.create_task(on_behalf_of.token_for(user))
            for user in ("user-a", "user-a", "user-b", "user-b")
        ]
        await servicer.exchanges_received(3)
        await asyncio.sleep(0.05)  # time for a fourth, which must not come
        servicer.gate.set()
        answers = await asyncio.gather(*calls)
    assert sorted(request.subject_token for request, _ in servicer.exchanges) == [
        "user-a",
        "user-b",
        "user-b",
    ]
    assert answers[0] == answers[1]
    assert len(on_behalf_of) == 1
