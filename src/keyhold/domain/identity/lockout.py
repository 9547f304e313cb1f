"""Login lockout: consecutive failures per (account, peer) and per peer, with a cooldown
that doubles with each failure past the threshold, up to a cap. A success resets the
account's count. Counting per (account, peer) means one attacker cannot lock a user out
everywhere; counting per peer stops one address spraying many accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int = 5
    peer_threshold: int = 20
    base_cooldown: timedelta = timedelta(minutes=1)
    max_cooldown: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(hours=1)  # quiet this long: the count starts over

    def cooldown(self, failures: int, threshold: int) -> timedelta:
        if failures < threshold:
            return timedelta(0)
        doublings = min(failures - threshold, 20)
        return min(self.base_cooldown * (1 << doublings), self.max_cooldown)


@dataclass(frozen=True, slots=True)
class FailureCount:
    failures: int
    locked_until: datetime | None


NO_FAILURES = FailureCount(0, None)


class LoginFailureStore(Protocol):
    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        """Each key's count, in the order given, in one read."""
        ...

    async def record_failure(
        self, key: str, at: datetime, policy: LockoutPolicy, threshold: int
    ) -> FailureCount:
        """Add one failure atomically and set the lock it earns."""
        ...

    async def reset(self, key: str) -> None: ...
