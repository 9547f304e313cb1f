"""LoginFailureStore in memory, with the SQL store's rules: a reservation counts on
every counter at once or on none, a count quiet for `forget_after` starts over, and a
counter at its threshold is locked for its cooldown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyhold.domain.identity.lockout import (
    NO_FAILURES,
    Counter,
    FailureCount,
    Reservation,
    Scope,
)


@dataclass(frozen=True, slots=True)
class _Row:
    failures: int
    locked_until: datetime | None
    updated_at: datetime


class InMemoryLoginFailureStore:
    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}

    async def reserve(
        self, counters: Sequence[Counter], at: datetime, forget_after: timedelta
    ) -> Reservation:
        forget = at - forget_after
        rows = [self.rows.get(counter.key) for counter in counters]
        locks = [
            (row.locked_until, counter)
            for counter, row in zip(counters, rows, strict=True)
            if row is not None
            and row.locked_until is not None
            and row.locked_until > at
            and row.updated_at >= forget
        ]
        if locks:
            until, refused_by = max(locks, key=lambda lock: lock[0])
            return Reservation(tuple(counters), refused_by=refused_by, locked_until=until)
        counts = []
        for counter, row in zip(counters, rows, strict=True):
            failures = 1 if row is None or row.updated_at < forget else row.failures + 1
            locked_until = (
                at + counter.cooldown(failures) if failures >= counter.threshold else None
            )
            self.rows[counter.key] = _Row(failures, locked_until, at)
            counts.append(FailureCount(failures, locked_until))
        return Reservation(tuple(counters), tuple(counts))

    async def release(self, reservation: Reservation, *, reset: Scope | None) -> None:
        if not reservation.granted:
            return
        for counter in reservation.counters:
            row = self.rows.get(counter.key)
            if row is None:
                continue
            failures = 0 if counter.scope is reset else max(row.failures - 1, 0)
            self.rows[counter.key] = _Row(failures, None, row.updated_at)

    async def counts(self, keys: Sequence[str]) -> list[FailureCount]:
        found = [self.rows.get(key) for key in keys]
        return [
            FailureCount(row.failures, row.locked_until) if row else NO_FAILURES for row in found
        ]

    async def forget_before(self, before: datetime) -> int:
        stale = [key for key, row in self.rows.items() if row.updated_at < before]
        for key in stale:
            del self.rows[key]
        return len(stale)
