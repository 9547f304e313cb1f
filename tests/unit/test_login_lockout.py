"""The lockout policy's counters and cooldowns, and the use of a reservation: refused
with the lock's scope and time left; a failure writes nothing more; a success gives
the reservation back and resets the account's count for that peer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from keyhold.application.identity.lockout import LoginLockout
from keyhold.domain.identity.lockout import (
    Counter,
    FailureCount,
    LockoutPolicy,
    LoginLocked,
    Reservation,
    Scope,
)
from tests.support.fakes import FakeClock

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_three_counters_per_check() -> None:
    policy = LockoutPolicy(threshold=5, peer_threshold=20, account_threshold=30)
    pair, peer, account = policy.counters("ada@example.com", "10.0.0.1")
    assert (pair.scope, pair.key, pair.threshold) == (
        Scope.ACCOUNT_PEER,
        "account:ada@example.com|peer:10.0.0.1",
        5,
    )
    assert (peer.scope, peer.key, peer.threshold) == (Scope.PEER, "peer:10.0.0.1", 20)
    assert (account.scope, account.key, account.threshold) == (
        Scope.ACCOUNT,
        "account:ada@example.com",
        30,
    )


def test_pair_and_peer_cooldowns_double_up_to_the_cap_and_the_account_only_slows() -> None:
    policy = LockoutPolicy(account_interval=timedelta(seconds=30))
    pair, _, account = policy.counters("ada@example.com", "10.0.0.1")
    for failures in range(40):
        assert pair.cooldown(failures) == policy.cooldown(failures, pair.threshold)
    assert [pair.cooldown(n).total_seconds() for n in range(4, 11)] == [
        0,
        60,
        120,
        240,
        480,
        900,
        900,
    ]
    assert {account.cooldown(n) for n in range(account.threshold, 500)} == {timedelta(seconds=30)}


class ScriptedStore:
    """Answers every reservation with `answer`; records releases."""

    def __init__(self, answer: Reservation) -> None:
        self.answer = answer
        self.released: list[tuple[Reservation, Scope | None]] = []

    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        return Reservation(
            tuple(counters), self.answer.counts, self.answer.refused_by, self.answer.locked_until
        )

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        self.released.append((reservation, reset))

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        raise AssertionError("not used")


class Locks:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    def login_locked(self, scope: str) -> None:
        self.scopes.append(scope)


async def test_a_refused_reservation_says_which_lock_and_for_how_long() -> None:
    policy = LockoutPolicy()
    _, peer, _ = policy.counters("ada@example.com", "10.0.0.1")
    store = ScriptedStore(
        Reservation((), refused_by=peer, locked_until=NOW + timedelta(seconds=42))
    )
    lockout = LoginLockout(store, policy, FakeClock(NOW))
    with pytest.raises(LoginLocked) as caught:
        await lockout.reserve("ada@example.com", "10.0.0.1")
    assert caught.value.scope is Scope.PEER
    assert caught.value.retry_after_seconds == 42
    assert (caught.value.reason, caught.value.denial_reason) == ("LOGIN_LOCKED", "ACCOUNT_LOCKED")


async def test_a_failure_keeps_the_reservation_and_a_success_gives_it_back() -> None:
    locked = FailureCount(5, NOW + timedelta(minutes=1))
    store = ScriptedStore(Reservation((), (locked, FailureCount(5, None), FailureCount(5, None))))
    telemetry = Locks()
    lockout = LoginLockout(store, LockoutPolicy(), FakeClock(NOW), telemetry)  # type: ignore[arg-type]
    failing = await lockout.reserve("ada@example.com", "10.0.0.1")
    lockout.failed(failing)
    assert store.released == []
    assert telemetry.scopes == ["account"]  # the failure that set the pair's lock
    succeeding = await lockout.reserve("ada@example.com", "10.0.0.1")
    await lockout.succeeded(succeeding)
    assert store.released == [(succeeding, Scope.ACCOUNT_PEER)]
