"""Every in-memory structure keyed by what calls bring has a count ceiling: past it,
something is forgotten (or, for open streams, refused), and what remains still works."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import MAX_RING_KEYS, KeyRing
from keyhold.adapters.oauth.client import MAX_BREAKERS, HttpOAuthClient
from keyhold.adapters.persistence.audit.audit_feed import LocalAuditFeed
from keyhold.api.pipeline import authentication
from keyhold.api.policy import load_policies
from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.audit.trail import AuditTrailReader
from keyhold.application.identity.revocations import LivenessCache
from keyhold.client.verifier import MAX_PUBLISHED_KEYS, JwksKeys
from keyhold.domain.bounded import BoundedMap
from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.signing_keys import SigningKey
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.wiring.grpc_api import SERVICES
from tests.support.fakes import FakeAuditAppender, FakeClock


def test_a_bounded_map_forgets_the_entry_stored_least_recently() -> None:
    entries: BoundedMap[str, int] = BoundedMap(3)
    for index, key in enumerate("abcd"):
        entries.put(key, index)
    assert len(entries) == 3
    assert entries.get("a") is None
    entries.put("b", 10)  # stored again: the most recent now
    entries.put("e", 4)
    assert entries.get("c") is None
    assert [key for key, _ in entries.items()] == ["d", "b", "e"]
    assert entries.evictions == 2
    with pytest.raises(ValueError, match="at least one"):
        BoundedMap(0)


async def test_shared_liveness_lookups_are_bounded_and_every_caller_is_answered() -> None:
    release = asyncio.Event()

    async def slow(principal: Principal) -> bool:
        await release.wait()
        return True

    cache = LivenessCache(slow, ttl_seconds=60, max_entries=100, max_shared_lookups=5)
    principal = Principal(PrincipalType.USER, "users/u")
    waiting = [asyncio.create_task(cache.is_live(f"s{i}", principal)) for i in range(50)]
    await asyncio.sleep(0)
    assert cache.shared_lookups == 5
    release.set()
    assert await asyncio.gather(*waiting) == [True] * 50
    assert cache.shared_lookups == 0


def test_the_liveness_cache_keeps_at_most_its_entries() -> None:
    async def live(principal: Principal) -> bool:
        return True

    cache = LivenessCache(live, ttl_seconds=60, max_entries=10)
    cache.revoked([f"s{i}" for i in range(1_000)])
    principal = Principal(PrincipalType.USER, "users/u")
    forgotten = [
        i for i in range(1_000) if cache.answer_without_waiting(f"s{i}", principal) is None
    ]
    assert len(forgotten) == 990  # the 10 latest revocations are still known


def _signing_keys(count: int) -> list[SigningKey]:
    clock = FakeClock()
    generator = Es256KeyGenerator()
    keys = []
    for _ in range(count):
        clock.advance(60)
        keys.append(generator.generate(clock.now()))
    return [*[replace(key, retired_at=clock.now()) for key in keys[:-1]], keys[-1]]


async def _no_keys() -> list[SigningKey]:
    return []


def test_the_key_ring_holds_the_newest_keys_up_to_its_ceiling() -> None:
    keys = _signing_keys(MAX_RING_KEYS + 20)
    ring = KeyRing(_no_keys)
    ring.replace(keys)
    assert ring.key_ids() == {key.key_id for key in keys[-MAX_RING_KEYS:]}
    assert ring.signer.key_id == keys[-1].key_id


async def test_verified_tokens_are_remembered_up_to_the_cache_size() -> None:
    clock = FakeClock()
    ring = KeyRing(_no_keys)
    ring.replace([Es256KeyGenerator().generate(clock.now())])
    tokens = AccessTokens(
        ring,
        issuer="keyhold",
        audience="keyhold",
        lifetime_seconds=900,
        leeway_seconds=30,
        clock=clock,
        cache_size=3,
    )
    issued = [tokens.issue(subject=f"users/u{i}", session_id=f"s{i}").token for i in range(10)]
    for token in issued:
        await tokens.verify(token)
    assert [tokens.principal_without_waiting(token) is not None for token in issued] == [
        False
    ] * 7 + [True] * 3


async def test_circuit_breakers_are_kept_for_at_most_so_many_providers() -> None:
    client = HttpOAuthClient()
    try:
        for index in range(MAX_BREAKERS + 50):
            client.breaker(f"provider-{index}")
        states = client.breaker_states()
        assert len(states) == MAX_BREAKERS
        assert f"provider-{MAX_BREAKERS + 49}" in states
    finally:
        await client.close()


def test_transport_identities_are_shared_for_a_few_kinds_only() -> None:
    for index in range(100):
        kind = f"kind-{index}".encode()
        identity = authentication.transport_identity({"transport_security_type": [kind]})
        assert identity.security_type == f"kind-{index}"
    assert len(authentication._WITHOUT_CERTIFICATE) <= 8


class _JwksChannel:
    """A channel whose GetJwks answers `count` keys."""

    def __init__(self, count: int) -> None:
        generator = Es256KeyGenerator()
        clock = FakeClock()
        self.jwks = json.dumps(
            {"keys": [generator.generate(clock.now()).public_jwk for _ in range(count)]}
        )

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def call(request: Any, **options: Any) -> pb.GetJwksResponse:
            return pb.GetJwksResponse(jwks_json=self.jwks)

        return call


async def test_the_client_verifier_holds_at_most_so_many_published_keys() -> None:
    channel = _JwksChannel(MAX_PUBLISHED_KEYS + 30)
    keys = JwksKeys(channel, min_refetch_seconds=0)  # type: ignore[arg-type]
    assert await keys.reload_if_stale()
    published = [jwk["kid"] for jwk in json.loads(channel.jwks)["keys"]]
    held = [kid for kid in published if keys.get(kid) is not None]
    assert held == published[-MAX_PUBLISHED_KEYS:]


def test_a_minute_is_what_the_rate_limit_windows_last() -> None:
    """The memory bound in the operations guide assumes every limit's window is at most
    a minute (so calls counted are bounded by a minute's calls)."""
    for policy in load_policies(SERVICES).values():
        for limit in policy.rate_limits:
            assert timedelta(seconds=limit.item.get_expiry()) <= timedelta(minutes=1)


class _EmptyTrail:
    async def ascending(self, first: int, last: int, limit: int) -> list[Any]:
        return []


async def test_audit_streams_open_at_once_are_bounded() -> None:
    clock = FakeClock()
    appender = FakeAuditAppender()
    reader = AuditTrailReader(
        _EmptyTrail(),  # type: ignore[arg-type]
        LocalAuditFeed(),
        AuditRecorder(appender, clock),
        signer=None,  # type: ignore[arg-type]
        clock=clock,
        issuer="keyhold",
        max_streams=2,
    )
    open_streams = [reader.stream(0) for _ in range(2)]
    waiting = [asyncio.create_task(anext(stream)) for stream in open_streams]
    await asyncio.sleep(0.05)
    with pytest.raises(ResourceExhausted) as refused:
        await anext(reader.stream(0))
    assert refused.value.reason == "AUDIT_STREAMS_EXHAUSTED"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for stream in open_streams:
        await stream.aclose()
    another = asyncio.create_task(anext(reader.stream(0)))  # one ended: admitted again
    await asyncio.sleep(0.05)
    assert not another.done()
    another.cancel()
    await asyncio.gather(another, return_exceptions=True)
