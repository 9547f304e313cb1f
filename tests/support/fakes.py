"""In-memory fakes of the domain ports."""

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


class FakeAuditAppender:
    """Appends to a list, chained as the real store does; can be told to fail."""

    def __init__(self) -> None:
        from keyhold.domain.audit.events import AuditEvent

        self.events: list[AuditEvent] = []
        self.fail_after: int | None = None

    async def append(self, record):  # type: ignore[no-untyped-def]
        from keyhold.domain.audit.chain import GENESIS_HASH, seal
        from keyhold.domain.errors import Unavailable

        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise Unavailable("DATABASE_UNAVAILABLE", "down")
        prev = self.events[-1].hash if self.events else GENESIS_HASH
        event = seal(len(self.events) + 1, prev, record)
        self.events.append(event)
        return event
