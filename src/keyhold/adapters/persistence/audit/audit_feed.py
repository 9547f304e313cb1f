"""Waking audit streams when events are appended (across replicas, the PostgreSQL
listener feeds it the sequences other replicas announce)."""

from __future__ import annotations

import asyncio
import contextlib


class LocalAuditFeed:
    def __init__(self) -> None:
        self._latest = 0
        self._changed = asyncio.Event()

    def published(self, sequence: int) -> None:
        if sequence > self._latest:
            self._latest = sequence
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_beyond(self, sequence: int, within_seconds: float) -> None:
        if self._latest > sequence:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), within_seconds)

    def announced(self, payload: str) -> None:
        """A sequence announced by any replica's appender."""
        if payload.isascii() and payload.isdigit():  # not "²": int() refuses it
            self.published(int(payload))
