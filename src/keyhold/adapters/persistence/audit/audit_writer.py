"""Group commit for the audit chain: appends that arrive together are written together
(one lock, one statement), which is what lets many concurrent writers keep up.

An append that arrives while the appender is idle is written at once. Those that arrive
while a batch is being written go in the next one, which starts no sooner than
`spacing_seconds` after the previous one started: under sustained load the batches then
stay large, instead of each costing a statement for a record or two."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from keyhold.domain.audit.events import AuditEvent, AuditRecord

Pending = tuple[AuditRecord, "asyncio.Future[AuditEvent]"]


class BatchTrail(Protocol):
    async def append_batch(self, records: Sequence[AuditRecord]) -> list[AuditEvent]:
        """The records appended in order, in one write; their events."""
        ...


class BatchingAuditAppender:
    def __init__(
        self,
        trail: BatchTrail,
        on_appended: Callable[[int], None] = lambda sequence: None,
        max_batch: int = 256,
        spacing_seconds: float = 0.004,
    ) -> None:
        self._trail = trail
        self._on_appended = on_appended
        self._max_batch = max_batch
        self._spacing = spacing_seconds
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> AuditEvent:
        future: asyncio.Future[AuditEvent] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="keyhold-audit-writer")
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        started: float | None = None
        while self._pending:
            if started is not None and len(self._pending) < self._max_batch:
                await asyncio.sleep(started + self._spacing - loop.time())
            started = loop.time()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                events = await self._trail.append_batch([record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), event in zip(batch, events, strict=True):
                if not future.done():
                    future.set_result(event)
            self._on_appended(events[-1].sequence)
