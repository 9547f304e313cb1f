"""A clock that moves only when a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def timestamp(self) -> int:
        return int(self.current.timestamp())

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
