"""One refresh per connection at a time: a PostgreSQL advisory lock (held in a
transaction of its own for the refresh, so every replica honours it), or a process lock
on SQLite (one process).

The advisory lock keeps a pooled connection for as long as the upstream call takes (up
to the provider timeout), and the refresh needs a second one for its reads and writes.
At most `max_holders` refreshes hold a lock at once (half the pool): a dozen refreshes,
or a provider that stalls them, can then neither deadlock the pool (each holding one
connection and waiting for its second) nor starve every other RPC of connections.
Refreshes beyond that wait here, holding nothing."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from keyhold.adapters.persistence.database import Database


def _lock_key(connection_id: str) -> int:
    digest = hashlib.sha256(b"keyhold/refresh/" + connection_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlRefreshLock:
    def __init__(self, database: Database, max_holders: int) -> None:
        self._database = database
        self._holders = asyncio.Semaphore(max(1, max_holders))
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, connection_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(connection_id)
        if lock is None:
            lock = self._locks[connection_id] = asyncio.Lock()
        async with lock:  # waiters in this process queue here, not on the database
            if not self._database.is_postgres:
                yield
                return
            async with self._holders, self._database.transaction() as connection:
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(connection_id)}
                )
                yield
