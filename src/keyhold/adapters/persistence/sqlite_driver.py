"""aiosqlite for SQLAlchemy with one trip to the connection's thread per statement.

aiosqlite runs each SQLite connection in a thread of its own and hands it one call at a
time. SQLAlchemy's adapter makes a statement four such calls (open a cursor, execute,
fetch, close), and every call is two thread hand-offs: a refresh of nine statements
and three commits cost 38 of them, most of its CPU. Here a statement is one call that
does all four in the thread; commits, rollbacks, server-side cursors and the
connection's settings go through SQLAlchemy's adapter unchanged.

`run_on_connection_thread` goes further for the hot write paths: a whole transaction,
written against `sqlite3`, in one call on the connection's thread.

This reaches into the same aiosqlite internals SQLAlchemy's own adapter uses (the
connection's queue of calls and its sqlite3 connection).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

T = TypeVar("T")
_Outcome = tuple[Any, list[Any], int, int | None]  # description, rows, rowcount, lastrowid


def _execute(
    connection: sqlite3.Connection, operation: str, parameters: Sequence[Any] | None
) -> _Outcome:
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _execute_many(
    connection: sqlite3.Connection, operation: str, parameters: Sequence[Sequence[Any]]
) -> _Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.description, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that holds no aiosqlite cursor: each statement runs, and its rows are
    fetched, in one call on the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount", "arraysize")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None  # nothing is held open: the rows are already here

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        try:
            await_(self._run(_execute, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        try:
            await_(self._run(_execute_many, operation, seq_of_parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, function: Any, operation: Any, parameters: Any) -> None:
        connection: Any = self._connection  # an aiosqlite.Connection
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await connection._execute(
                function, connection._conn, operation, parameters
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to give `create_async_engine(..., module=...)` for aiosqlite."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        connection = super().connect(*arg, **kw)
        connection.__class__ = _OneTripConnection  # the same slots: only the cursor differs
        return connection


async def run_on_connection_thread(
    connection: AsyncConnection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """`work(sqlite3_connection)` on the connection's own thread, in one trip: a
    transaction of several statements costs one hand-off, not two per statement. A
    `sqlite3.Error` comes out as SQLAlchemy's (so `Database.translate` knows it)."""
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection  # a _OneTripConnection
    driver = adapted._connection  # its aiosqlite.Connection
    try:
        async with adapted._execute_mutex:
            result: T = await driver._execute(work, driver._conn)
    except sqlite3.Error as error:
        raise DBAPIError.instance(None, None, error, sqlite3.Error) from error
    return result
