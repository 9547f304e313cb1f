"""Waking audit streams when events are appended: in-process, and across replicas
through PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from keyhold.adapters.persistence.audit_trail import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)


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


class PostgresAuditListener:
    """LISTENs on the audit channel and forwards each appended sequence to the feed;
    reconnects with backoff. While disconnected, streams still wake on their timeout."""

    def __init__(self, database_url: str, feed: LocalAuditFeed) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._feed = feed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyhold-audit-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.isdigit():
            self._feed.published(int(payload))

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("audit_listener_unavailable", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            try:
                await connection.add_listener(NOTIFY_CHANNEL, self._notified)
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("audit_listener_lost", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=1)
