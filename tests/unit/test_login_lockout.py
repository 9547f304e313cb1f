"""The lockout around the failure store: one read for both counts, and no reset write
for a login that found no failures to reset."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from keyhold.application.identity.lockout import LoginLockout
from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.identity.lockout import NO_FAILURES, FailureCount, LockoutPolicy
from tests.support.fakes import FakeClock


class MemoryStore:
    def __init__(self) -> None:
        self.counts_by_key: dict[str, FailureCount] = {}
        self.reads = 0
        self.resets: list[str] = []

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        self.reads += 1
        return [self.counts_by_key.get(key, NO_FAILURES) for key in keys]

    async def record_failure(
        self, key: str, at: datetime, policy: LockoutPolicy, threshold: int
    ) -> FailureCount:
        failures = self.counts_by_key.get(key, NO_FAILURES).failures + 1
        cooldown = policy.cooldown(failures, threshold)
        count = FailureCount(failures, at + cooldown if cooldown else None)
        self.counts_by_key[key] = count
        return count

    async def reset(self, key: str) -> None:
        self.resets.append(key)
        self.counts_by_key.pop(key, None)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lockout(store: MemoryStore) -> LoginLockout:
    return LoginLockout(store, LockoutPolicy(), FakeClock(datetime(2026, 11, 22, tzinfo=UTC)))


async def test_a_clean_login_reads_once_and_writes_nothing(
    store: MemoryStore, lockout: LoginLockout
) -> None:
    checked = await lockout.check("ada@example.com", "10.0.0.1")
    await lockout.succeeded("ada@example.com", "10.0.0.1", checked)
    assert store.reads == 1
    assert store.resets == []


async def test_a_login_after_a_failure_resets_the_account_count(
    store: MemoryStore, lockout: LoginLockout
) -> None:
    await lockout.failed("ada@example.com", "10.0.0.1")
    checked = await lockout.check("ada@example.com", "10.0.0.1")
    assert checked.failures == 1
    await lockout.succeeded("ada@example.com", "10.0.0.1", checked)
    assert store.resets == ["account:ada@example.com|peer:10.0.0.1"]
    again = await lockout.check("ada@example.com", "10.0.0.1")
    assert again == NO_FAILURES


async def test_a_locked_peer_is_refused_even_for_a_clean_account(
    store: MemoryStore, lockout: LoginLockout
) -> None:
    for number in range(LockoutPolicy().peer_threshold):
        await lockout.failed(f"user{number}@example.com", "10.0.0.9")
    with pytest.raises(ResourceExhausted):
        await lockout.check("ada@example.com", "10.0.0.9")
