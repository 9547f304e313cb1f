"""The database: its engine, a liveness probe, transactions of their own, a connection
kept for a serial caller, and the translation of connection failures into
`Unavailable`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.adapters.persistence.engine import statements_commit_alone
from keyhold.domain.errors import Unavailable

T = TypeVar("T")

# PoolTimeout: no pooled connection came free within the connect timeout.
_CONNECTION_ERRORS = (OperationalError, InterfaceError, OSError, TimeoutError, PoolTimeout)
# PostgreSQL refusing or ending a connection, which asyncpg raises as plain server errors:
# class 08 (connection exception), 53300 too many connections, 57P01 admin shutdown,
# 57P02 crash shutdown, 57P03 cannot connect now (starting up or shutting down).
_UNAVAILABLE_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return (
        bool(exc.connection_invalidated)
        or sqlstate.startswith("08")
        or sqlstate in _UNAVAILABLE_STATES
    )


def _unavailable() -> Unavailable:
    return Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry later")


async def _run_to_completion(work: Awaitable[T]) -> tuple[asyncio.Task[T], int]:
    """`work` run to its end although the calling task is cancelled meanwhile: the
    finished task, and how many cancellations of the caller it held back."""
    task = asyncio.ensure_future(work)
    held_back = 0
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            held_back += 1
    return task, held_back


async def _complete_deferring_cancellation(work: Awaitable[T]) -> T:
    """`work` run to its end even if the caller is cancelled meanwhile; the cancellation
    is raised once it is over."""
    task, held_back = await _run_to_completion(work)
    if held_back:
        raise asyncio.CancelledError
    return task.result()


async def complete_absorbing_cancellation(work: Awaitable[T]) -> T:
    """Run `work` to its end although the calling task is cancelled meanwhile; the
    cancellation is then dropped: the call's work is done, and it goes on to record so.
    (Cancellation before a commit is sent still stops the statements under way.)"""
    task, held_back = await _run_to_completion(work)
    current = asyncio.current_task()
    if current is not None:
        for _ in range(held_back):
            current.uncancel()
    return task.result()


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.on_unavailable = on_unavailable
        self.autocommit_engine = statements_commit_alone(engine)
        self._kept: list[KeptConnection] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction of its own; connection failures → Unavailable."""
        async with self.failures_translated(), self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose statements commit one by one (no BEGIN/COMMIT round trips),
        for single reads and single atomic statements; connection failures → Unavailable."""
        async with (
            self.failures_translated(),
            self.autocommit_engine.connect() as connection,
        ):
            yield connection

    @asynccontextmanager
    async def failures_translated(self) -> AsyncIterator[None]:
        """Connection failures raised inside become `Unavailable`."""
        try:
            yield
        except Exception as exc:
            translated = self.translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def translate(self, exc: BaseException) -> BaseException:
        if is_connection_failure(exc):
            self.on_unavailable()
            return _unavailable()
        return exc

    async def ping(self, within_seconds: float) -> bool:
        try:
            async with (
                asyncio.timeout(within_seconds),
                self.autocommit_engine.connect() as connection,
            ):
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def kept_connection(self) -> KeptConnection:
        """A connection to keep between uses (see `KeptConnection`); `dispose` closes it."""
        kept = KeptConnection(self)
        self._kept.append(kept)
        return kept

    async def dispose(self) -> None:
        for kept in self._kept:
            await kept.close()
        await self.engine.dispose()


class KeptConnection:
    """One autocommit connection of the pool, kept from one use to the next for a caller
    whose uses never overlap (the audit trail's appends), so that a use costs no
    checkout. Any failure during a use discards it (the next use takes another);
    connection failures become `Unavailable`. `close` gives it back to the pool, and so
    does the database's `dispose`."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: AsyncConnection | None = None

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        async with self._database.failures_translated():
            if self._connection is None:
                connection = self._database.autocommit_engine.connect()
                await connection.start()
                self._connection = connection
            try:
                yield self._connection
            except BaseException:
                await self._discard()
                raise

    async def _discard(self) -> None:
        if self._connection is not None:
            await _complete_deferring_cancellation(self._connection.invalidate())
        await self.close()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await _complete_deferring_cancellation(connection.close())
