"""PostgreSQL LISTEN/NOTIFY: one listening connection per process for every channel,
reconnecting with backoff, and a publisher for revocation notices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url

from keyhold.adapters.persistence.database import Database

log = structlog.get_logger(__name__)

AUDIT_CHANNEL = "keyhold_audit"
REVOCATION_CHANNEL = "keyhold_revocations"
_MAX_PAYLOAD = 7000  # NOTIFY payloads must stay under 8000 bytes


class PostgresListener:
    """Calls `handlers[channel](payload)` for each notification. While disconnected,
    nothing arrives: audit streams then wake on their timeout, and revocation caches
    expire on theirs."""

    def __init__(self, database_url: str, handlers: dict[str, Callable[[str], None]]) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._handlers = handlers
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyhold-pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, _connection: Any, _pid: int, channel: str, payload: object) -> None:
        handler = self._handlers.get(channel)
        if handler is not None and isinstance(payload, str):
            handler(payload)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("listener_unavailable", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            try:
                for channel in self._handlers:
                    await connection.add_listener(channel, self._notified)
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("listener_lost", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=1)


class PostgresRevocationNotices:
    """Publishes `kind:id,id,…` on the revocation channel (chunked under the size cap)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def publish(self, kind: str, ids: list[str]) -> None:
        chunks: list[list[str]] = [[]]
        for identifier in ids:
            if sum(len(i) + 1 for i in chunks[-1]) + len(identifier) > _MAX_PAYLOAD:
                chunks.append([])
            chunks[-1].append(identifier)
        try:
            async with self._database.autocommit() as connection:
                for chunk in chunks:
                    await connection.execute(
                        text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": REVOCATION_CHANNEL, "payload": f"{kind}:{','.join(chunk)}"},
                    )
        except Exception as exc:
            # Other replicas still drop the session within their cache lifetime.
            log.warning("revocation_notice_failed", kind=kind, error=type(exc).__name__)


def parse_revocation(payload: str) -> tuple[str, list[str]]:
    kind, _, ids = payload.partition(":")
    return kind, [identifier for identifier in ids.split(",") if identifier]
