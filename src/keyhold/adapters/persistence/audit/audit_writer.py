"""Group commit for the audit chain: appends that arrive together share one transaction
(one lock, one round of inserts), which is what lets many concurrent writers keep up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
from keyhold.domain.audit.events import AuditEvent, AuditRecord

Pending = tuple[AuditRecord, "asyncio.Future[AuditEvent]"]


class BatchingAuditAppender:
    def __init__(
        self,
        trail: SqlAuditTrail,
        on_appended: Callable[[int], None] = lambda sequence: None,
        max_batch: int = 256,
    ) -> None:
        self._trail = trail
        self._on_appended = on_appended
        self._max_batch = max_batch
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> AuditEvent:
        future: asyncio.Future[AuditEvent] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="keyhold-audit-writer")
        return await future

    async def _drain(self) -> None:
        while self._pending:
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
