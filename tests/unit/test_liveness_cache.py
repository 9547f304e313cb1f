"""The liveness cache: one lookup for every call that finds an entry expired, a stale
entry answered while it is refreshed, and a revocation is never undone by a lookup that
was in flight."""

from __future__ import annotations

import asyncio

import pytest

from keyhold.application.identity.revocations import LivenessCache, Revocations
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import ANONYMOUS, Principal, PrincipalType


class SlowSource:
    def __init__(self, answer: bool = True) -> None:
        self.calls = 0
        self.answer = answer
        self.release = asyncio.Event()

    async def __call__(self, principal: Principal) -> bool:
        self.calls += 1
        await self.release.wait()
        return self.answer


async def test_concurrent_misses_share_one_lookup() -> None:
    source = SlowSource()
    cache = LivenessCache(source, ttl_seconds=60, max_entries=10)
    waiting = [asyncio.create_task(cache.is_live("s1", ANONYMOUS)) for _ in range(50)]
    await asyncio.sleep(0)
    source.release.set()
    assert await asyncio.gather(*waiting) == [True] * 50
    assert source.calls == 1
    assert await cache.is_live("s1", ANONYMOUS)  # cached now
    assert source.calls == 1


async def test_an_expired_entry_is_looked_up_again() -> None:
    source = SlowSource()
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=0, max_entries=10)
    await cache.is_live("s1", ANONYMOUS)
    await cache.is_live("s1", ANONYMOUS)
    assert source.calls == 2


async def test_a_revocation_during_a_lookup_stays() -> None:
    source = SlowSource(answer=True)
    cache = LivenessCache(source, ttl_seconds=60, max_entries=10)
    first = asyncio.create_task(cache.is_live("s1", ANONYMOUS))
    await asyncio.sleep(0)
    cache.revoked(["s1"])
    source.release.set()
    assert await first is False
    assert await cache.is_live("s1", ANONYMOUS) is False


async def test_a_failed_lookup_reaches_every_waiter_and_is_retried() -> None:
    calls = 0

    async def failing(principal: Principal) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    cache = LivenessCache(failing, ttl_seconds=60, max_entries=10)
    results = await asyncio.gather(
        *(cache.is_live("s1", ANONYMOUS) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    with pytest.raises(ConnectionError):
        await cache.is_live("s1", ANONYMOUS)
    assert calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    source = SlowSource()
    cache = LivenessCache(source, ttl_seconds=60, max_entries=10)
    impatient = asyncio.create_task(cache.is_live("s1", ANONYMOUS))
    patient = asyncio.create_task(cache.is_live("s1", ANONYMOUS))
    await asyncio.sleep(0)
    impatient.cancel()
    source.release.set()
    assert await patient is True


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


async def test_a_stale_live_entry_answers_at_once_while_one_lookup_refreshes_it(
    clock: Monotonic,
) -> None:
    source = SlowSource(answer=True)
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=5, max_entries=10, monotonic=clock)
    assert await cache.is_live("s1", ANONYMOUS) is True
    source.release.clear()
    source.answer = False  # ended on a replica whose notice never came
    clock.now += 6  # expired, within the second period
    answers = [await cache.is_live("s1", ANONYMOUS) for _ in range(20)]
    assert answers == [True] * 20  # no call waited for the database
    await asyncio.sleep(0)  # the refresh starts
    assert source.calls == 2  # one refresh for all of them
    source.release.set()
    await asyncio.sleep(0.01)
    assert await cache.is_live("s1", ANONYMOUS) is False  # the refresh's answer applies
    assert source.calls == 2


async def test_past_the_second_period_the_calls_wait_for_the_lookup(clock: Monotonic) -> None:
    source = SlowSource(answer=True)
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=5, max_entries=10, monotonic=clock)
    await cache.is_live("s1", ANONYMOUS)
    source.release.clear()
    source.answer = False
    clock.now += 11
    waiting = asyncio.create_task(cache.is_live("s1", ANONYMOUS))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # not answered from an entry this old
    source.release.set()
    assert await waiting is False


async def test_a_revocation_is_not_answered_from_a_stale_entry(clock: Monotonic) -> None:
    source = SlowSource(answer=True)
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=5, max_entries=10, monotonic=clock)
    await cache.is_live("s1", ANONYMOUS)
    clock.now += 6
    cache.revoked(["s1"])
    assert await cache.is_live("s1", ANONYMOUS) is False
    assert source.calls == 1


async def test_a_failed_refresh_behind_the_calls_is_retried(clock: Monotonic) -> None:
    answers = [True]

    async def flaky(principal: Principal) -> bool:
        if not answers:
            raise ConnectionError("database down")
        return answers.pop()

    cache = LivenessCache(flaky, ttl_seconds=5, max_entries=10, monotonic=clock)
    assert await cache.is_live("s1", ANONYMOUS) is True
    clock.now += 6
    assert await cache.is_live("s1", ANONYMOUS) is True  # the refresh fails behind it
    await asyncio.sleep(0.01)
    clock.now += 5  # past the second period: the caller sees the failure
    with pytest.raises(ConnectionError):
        await cache.is_live("s1", ANONYMOUS)


async def test_known_answers_only_what_needs_no_waiting() -> None:
    now = [1000.0]
    source = SlowSource()
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=5, max_entries=10, monotonic=lambda: now[0])
    assert cache.answer_without_waiting("s1", ANONYMOUS) is None  # never looked up
    assert await cache.is_live("s1", ANONYMOUS)
    assert cache.answer_without_waiting("s1", ANONYMOUS) is True
    now[0] += 6  # stale, within the second period: answered, refreshed behind
    assert cache.answer_without_waiting("s1", ANONYMOUS) is True
    await asyncio.sleep(0)
    assert source.calls == 2
    now[0] += 11  # past both periods of the refreshed entry
    assert cache.answer_without_waiting("s1", ANONYMOUS) is None
    cache.revoked(["s1"])
    assert cache.answer_without_waiting("s1", ANONYMOUS) is False


def _user(subject: str, session_id: str) -> Principal:
    return Principal(PrincipalType.USER, subject, session_id=session_id)


async def test_an_entry_answers_only_for_its_own_subject() -> None:
    """Bob's live session, cached, does not vouch for a token of Alice's that names it;
    and her refused lookup does not end his session in the cache."""
    looked_up: list[str] = []

    async def owned_by_bob(principal: Principal) -> bool:
        looked_up.append(principal.subject)
        return principal.subject == "users/bob"

    revocations = Revocations(owned_by_bob, owned_by_bob, ttl_seconds=60)
    bob, alice = _user("users/bob", "s-bob"), _user("users/alice", "s-bob")
    await revocations.check(bob)
    assert revocations.known_live(bob)
    assert not revocations.known_live(alice)
    with pytest.raises(Unauthenticated) as refused:
        await revocations.check(alice)
    assert refused.value.reason == "SESSION_REVOKED"
    assert looked_up == ["users/bob", "users/alice"]
    await revocations.check(bob)  # still live, from the cache
    assert looked_up == ["users/bob", "users/alice"]


async def test_a_revocation_ends_the_session_for_every_subject() -> None:
    source = SlowSource()
    source.release.set()
    cache = LivenessCache(source, ttl_seconds=60, max_entries=10)
    bob, alice = _user("users/bob", "s1"), _user("users/alice", "s1")
    assert await cache.is_live("s1", bob)
    assert await cache.is_live("s1", alice)
    cache.revoked(["s1"])
    assert cache.answer_without_waiting("s1", bob) is False
    assert await cache.is_live("s1", alice) is False
