"""Login lockout: every password check (a login, or ChangePassword's current password)
first reserves one attempt on three counters at once, and is evaluated only if none of
them refuses. The reservation counts as a failure until the check succeeds; a success
gives it back (and resets the account's count for that peer).

- **account + peer** (`threshold`): throttles one attacker guessing one account. At the
  threshold the pair is locked, for a cooldown that doubles with each further failure
  up to a cap. Other peers are not affected: an attacker cannot lock the owner out.
- **peer** (`peer_threshold`): throttles one address spraying many accounts, locked the
  same way.
- **account** (`account_threshold`, over all peers): protects the account against many
  addresses. Past the ceiling it is never locked, only slowed: one password check per
  `account_interval`, whoever asks, so the owner still gets in, at worst after a wait.

No more checks than a counter allows are ever evaluated, whatever the concurrency and
the number of replicas: the reservation is one conditional write in the database."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.identity import DOMAIN

_MAX_DOUBLINGS = 20
DENIAL_REASON = "ACCOUNT_LOCKED"


class Scope(enum.Enum):
    ACCOUNT_PEER = "account"
    PEER = "peer"
    ACCOUNT = "account_ceiling"


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter a password check is reserved on. From the `threshold`-th counted
    failure on, each reservation locks the counter for a cooldown: `cooldowns[i]` for
    the (threshold + i)-th failure, the last one for every failure after those."""

    scope: Scope
    key: str
    threshold: int
    cooldowns: tuple[timedelta, ...]

    def cooldown(self, failures: int) -> timedelta:
        if failures < self.threshold:
            return timedelta(0)
        return self.cooldowns[min(failures - self.threshold, len(self.cooldowns) - 1)]


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int = 5
    peer_threshold: int = 20
    account_threshold: int = 20
    account_interval: timedelta = timedelta(seconds=30)
    base_cooldown: timedelta = timedelta(minutes=1)
    max_cooldown: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(hours=1)  # quiet this long: the count starts over
    _doubling: tuple[timedelta, ...] = field(init=False, repr=False, compare=False)

    def cooldown(self, failures: int, threshold: int) -> timedelta:
        if failures < threshold:
            return timedelta(0)
        doublings = min(failures - threshold, _MAX_DOUBLINGS)
        return min(self.base_cooldown * (1 << doublings), self.max_cooldown)

    def __post_init__(self) -> None:
        ladder = []
        for past in range(_MAX_DOUBLINGS + 1):  # the cooldowns from the threshold on
            ladder.append(self.cooldown(past, 0))
            if ladder[-1] == self.max_cooldown:
                break
        object.__setattr__(self, "_doubling", tuple(ladder))

    def counters(self, email: str, peer: str) -> tuple[Counter, ...]:
        """The counters one password check for `email` from `peer` is reserved on."""
        doubling = self._doubling
        return (
            Counter(Scope.ACCOUNT_PEER, f"account:{email}|peer:{peer}", self.threshold, doubling),
            Counter(Scope.PEER, f"peer:{peer}", self.peer_threshold, doubling),
            Counter(
                Scope.ACCOUNT,
                f"account:{email}",
                self.account_threshold,
                (self.account_interval,),
            ),
        )


@dataclass(frozen=True, slots=True)
class FailureCount:
    failures: int
    locked_until: datetime | None


NO_FAILURES = FailureCount(0, None)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of reserving a check: `granted`, with the counts it brought each
    counter to; or refused by `refused_by`, locked until `locked_until`."""

    counters: tuple[Counter, ...]
    counts: tuple[FailureCount, ...] = ()
    refused_by: Counter | None = None
    locked_until: datetime | None = None

    @property
    def granted(self) -> bool:
        return self.refused_by is None

    def locks_set(self) -> list[Scope]:
        """The scopes whose lock this reservation set, once it is a counted failure."""
        return [
            counter.scope
            for counter, count in zip(self.counters, self.counts, strict=True)
            if count.locked_until is not None
        ]


@dataclass(frozen=True, slots=True)
class GiveBack:
    """What a successful check gives back: its granted reservation, uncounted, and the
    counter of scope `reset` set to zero."""

    reservation: Reservation
    reset: Scope | None


class LoginLocked(ResourceExhausted):
    """A password check refused unevaluated: the caller is throttled or the account
    slowed. Recorded in the audit trail as DENIED, reason ACCOUNT_LOCKED."""

    def __init__(self, retry_after_seconds: float, scope: Scope) -> None:
        self.scope = scope
        super().__init__(
            "LOGIN_LOCKED",
            "too many failed logins; try again later",
            retry_after_seconds=retry_after_seconds,
            domain=DOMAIN,
            denial_reason=DENIAL_REASON,
        )


class LoginFailureStore(Protocol):
    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        """Count one attempt on every counter at once, or on none if any is locked at
        `at`: one conditional write, so that concurrent reservations (from any replica)
        never exceed what a counter allows. A count last touched before
        `at - forget_after` starts over."""
        ...

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        """Give a granted reservation back: uncount it on every counter (lifting a lock
        it set), and reset the counter of scope `reset` to zero."""
        ...

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        """Each key's count, in the order given, in one read."""
        ...

    async def forget_before(self, before: datetime) -> int:
        """Drop the counts last touched before `before` (a reservation would start them
        over anyway), so that keys made of what callers send do not pile up; how many."""
        ...
