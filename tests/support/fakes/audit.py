"""An audit appender that keeps the chain in a list."""

from __future__ import annotations

from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.chain import GENESIS_HASH, seal
from keyhold.domain.audit.events import AuditEvent, AuditRecord
from keyhold.domain.errors import Unavailable


class FakeAuditAppender:
    """Appends to a list, chained as the real store does; can be told to fail."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail_after: int | None = None

    async def append(self, record: AuditRecord) -> AuditEvent:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise Unavailable("DATABASE_UNAVAILABLE", "down")
        prev = self.events[-1].hash if self.events else GENESIS_HASH
        event = seal(len(self.events) + 1, prev, record)
        self.events.append(event)
        return event

    def records(self, action: Action | None = None) -> list[AuditRecord]:
        """The records appended, oldest first; only `action`'s when given."""
        return [
            event.record
            for event in self.events
            if action is None or event.record.action == action.value
        ]
