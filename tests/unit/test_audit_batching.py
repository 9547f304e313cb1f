"""Group commit of audit appends: an idle appender writes at once; appends that arrive
while a batch is written wait for the spacing and are written together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from keyhold.adapters.persistence.audit.audit_writer import BatchingAuditAppender
from keyhold.domain.audit.chain import GENESIS_HASH, seal
from keyhold.domain.audit.events import AuditEvent, AuditRecord
from tests.support.audit import system_record


class _Trail:
    """Records each batch's size and start time; `on_first` runs as the first batch ends."""

    def __init__(self, on_first: object = None) -> None:
        self.batches: list[tuple[int, float]] = []
        self._sequence = 0
        self._on_first = on_first
        self.writing = asyncio.Event()

    async def append_batch(self, records: Sequence[AuditRecord]) -> list[AuditEvent]:
        self.batches.append((len(records), asyncio.get_running_loop().time()))
        self.writing.set()
        await asyncio.sleep(0.001)
        events = []
        for record in records:
            self._sequence += 1
            events.append(seal(self._sequence, GENESIS_HASH, record))
        if len(self.batches) == 1 and callable(self._on_first):
            self._on_first()
        return events


async def test_an_append_to_an_idle_appender_is_written_at_once() -> None:
    appender = BatchingAuditAppender(_Trail(), spacing_seconds=60.0)
    for index in range(3):  # each finds the appender idle again
        await asyncio.wait_for(appender.append(system_record(index)), timeout=5.0)


async def test_appends_arriving_while_a_batch_is_written_wait_for_the_spacing() -> None:
    spacing = 0.2
    appends: list[asyncio.Task[AuditEvent]] = []

    def more(first: int, count: int) -> None:
        appends.extend(
            asyncio.create_task(appender.append(system_record(first + i))) for i in range(count)
        )

    def soon_after_the_first_batch() -> None:
        asyncio.get_running_loop().call_later(spacing / 2, more, 10, 3)

    trail = _Trail(on_first=soon_after_the_first_batch)
    appender = BatchingAuditAppender(trail, spacing_seconds=spacing)
    first = asyncio.create_task(appender.append(system_record(0)))
    await trail.writing.wait()  # the first batch is being written
    more(1, 5)
    await first
    await asyncio.gather(*appends)
    assert [size for size, _ in trail.batches] == [1, 8]
    assert trail.batches[1][1] - trail.batches[0][1] >= spacing * 0.99
