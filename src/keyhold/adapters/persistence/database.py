"""The database as the application sees it: units of work, a liveness probe, and the
translation of connection failures into `Unavailable`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.persistence.one_time_tokens import SqlOneTimeTokenRepository
from keyhold.adapters.persistence.sessions import SqlSessionRepository
from keyhold.adapters.persistence.signing_keys import SqlSigningKeyRepository
from keyhold.adapters.persistence.users import SqlUserRepository
from keyhold.domain.errors import Unavailable

_CONNECTION_ERRORS = (OperationalError, InterfaceError, OSError, TimeoutError)


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _unavailable() -> Unavailable:
    return Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry later")


class SqlUnitOfWork:
    """One transaction; commits when the block ends cleanly, rolls back otherwise."""

    signing_keys: SqlSigningKeyRepository
    users: SqlUserRepository
    sessions: SqlSessionRepository
    one_time_tokens: SqlOneTimeTokenRepository

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

    @property
    def connection(self) -> AsyncConnection:
        assert self._connection is not None, "unit of work used outside `async with`"
        return self._connection

    async def __aenter__(self) -> SqlUnitOfWork:
        try:
            self._connection = await self._database.engine.connect()
            self._transaction = await self._connection.begin()
        except Exception as exc:
            if self._connection is not None:
                await self._connection.close()
            raise self._database.translate(exc) from exc
        self.signing_keys = SqlSigningKeyRepository(self._connection, self._database.aead)
        self.users = SqlUserRepository(self._connection)
        self.sessions = SqlSessionRepository(self._connection)
        self.one_time_tokens = SqlOneTimeTokenRepository(self._connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        assert self._transaction is not None
        try:
            if exc is None:
                await self._transaction.commit()
            else:
                await self._transaction.rollback()
        except Exception as commit_error:
            if exc is None:
                raise self._database.translate(commit_error) from commit_error
        finally:
            # A broken connection may fail to close; the pool discards it either way.
            with contextlib.suppress(Exception):
                await self._connection.close()
        if exc is not None and is_connection_failure(exc):
            raise self._database.translate(exc) from exc


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        aead: AeadKeyRing,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.aead = aead
        self.on_unavailable = on_unavailable

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction of its own; connection failures → Unavailable."""
        try:
            async with self.engine.begin() as connection:
                yield connection
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
            async with asyncio.timeout(within_seconds), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
