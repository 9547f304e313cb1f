"""What the audit use cases need from the outside world."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from keyhold.domain.audit.events import AuditEvent, AuditFilter, AuditRecord


class AuditAppender(Protocol):
    async def append(self, record: AuditRecord) -> AuditEvent:
        """Append to the chain in a transaction of its own; raises Unavailable if the
        store cannot be written."""
        ...


class AuditTrail(Protocol):
    async def head(self) -> AuditEvent | None: ...

    async def get(self, sequence: int) -> AuditEvent | None: ...

    async def newest_first(
        self, where: AuditFilter, before_sequence: int | None, limit: int
    ) -> list[AuditEvent]: ...

    async def ascending(self, from_sequence: int, to_sequence: int, limit: int) -> list[AuditEvent]:
        """Events with from_sequence ≤ sequence ≤ to_sequence, oldest first."""
        ...

    async def first_sequence(self) -> int | None:
        """The oldest retained sequence (records before it may have been pruned)."""
        ...

    async def prune_before(self, cutoff: datetime) -> int:
        """Delete records older than `cutoff` (retention); returns how many."""
        ...


class AuditFeed(Protocol):
    """Wakes streaming readers when new events are appended."""

    def published(self, sequence: int) -> None: ...

    async def wait_beyond(self, sequence: int, within_seconds: float) -> None:
        """Return once an event after `sequence` is known to exist, or after `within_seconds`."""
        ...


class CheckpointSigner(Protocol):
    def sign(self, claims: dict[str, object]) -> tuple[str, str]:
        """A JWS compact serialization of `claims`, and the id of the key that signed it."""
        ...
