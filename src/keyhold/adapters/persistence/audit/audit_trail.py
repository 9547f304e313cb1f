"""The audit table: appending to the hash chain, and reading it back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from enum import Enum
from typing import Any, get_origin, get_type_hints

from sqlalchemy import Row, Select, bindparam, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.database import Database, KeptConnection
from keyhold.adapters.persistence.tables import audit_events, audit_retention
from keyhold.domain.audit.chain import GENESIS_HASH, RECORD_FIELDS, seal
from keyhold.domain.audit.events import AuditEvent, AuditFilter, AuditRecord

# pg_advisory_xact_lock key serialising appends across every replica ("kh-audit").
AUDIT_APPEND_LOCK = 0x6B682D6175646974


def _column_reader(kind: Any) -> Callable[[Any], Any]:
    """How a record field of type `kind` is read back from its column."""
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind
    origin = get_origin(kind) or kind
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return json.loads
    return lambda value: value


# Each record field is stored in the column of its name (see tests/unit/test_audit_columns.py).
_READERS = {name: _column_reader(kind) for name, kind in get_type_hints(AuditRecord).items()}


def _column_value(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    return value


def _row(event: AuditEvent) -> dict[str, Any]:
    row = {name: _column_value(getattr(event.record, name)) for name in RECORD_FIELDS}
    return {
        "sequence": event.sequence,
        **row,
        "canonical": event.canonical,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _event(row: Row[Any]) -> AuditEvent:
    record = AuditRecord(**{name: _READERS[name](getattr(row, name)) for name in RECORD_FIELDS})
    return AuditEvent(row.sequence, record, row.canonical, row.prev_hash, row.hash)


# Built once, so that SQLAlchemy computes their cache keys once (see session_state).
# PostgreSQL: the lock and then the head, in one round trip (migration 0008).
_HEAD_UNDER_LOCK = text("SELECT head_sequence, head_hash FROM keyhold_audit_head_locked(:key)")
_HEAD = (
    select(audit_events.c.sequence, audit_events.c.hash)
    .order_by(audit_events.c.sequence.desc())
    .limit(1)
)
_INSERT = audit_events.insert()
Head = tuple[int, bytes]


def _insert_if_head_under_lock() -> Any:
    """PostgreSQL: the rows (one array per column) inserted only if the chain's head,
    read under the append lock, is the one given; nothing is inserted otherwise."""
    names = [column.name for column in audit_events.c]
    rows = (
        func.unnest(
            *(bindparam(column.name, type_=ARRAY(column.type)) for column in audit_events.c)
        )
        .table_valued(*names)
        .render_derived(name="appended")
    )
    head = func.keyhold_audit_head_locked(bindparam("key")).table_valued(
        "head_sequence", "head_hash", name="head"
    )
    head_is_expected = exists(
        select(head.c.head_sequence).where(
            head.c.head_sequence == bindparam("head_sequence"),
            head.c.head_hash == bindparam("head_hash"),
        )
    )
    return _INSERT.from_select(
        names, select(*(rows.c[name] for name in names)).where(head_is_expected)
    )


_INSERT_IF_HEAD_UNDER_LOCK = _insert_if_head_under_lock()


def _sealed(records: Sequence[AuditRecord], head: Head) -> list[AuditEvent]:
    sequence, prev_hash = head
    events = []
    for record in records:
        sequence += 1
        event = seal(sequence, prev_hash, record)
        events.append(event)
        prev_hash = event.hash
    return events


class SqlAuditTrail:
    """Appends are serialised by a PostgreSQL advisory lock (and by a process lock on
    SQLite); the sequence is the head's plus one, checked or read under that lock, so it
    has no gaps.

    The trail remembers the head it last wrote and seals the next records against it.
    On PostgreSQL one statement inserts them if, under the lock, that is still the head;
    on SQLite, whose every write takes the write lock first, one statement inserts them,
    and the next sequence already taken means another process appended. Either way
    nothing was then written, and the append is done again in a transaction that reads
    the head under the lock. The appends run on `connection` when one is given: a pooled
    connection kept for them; else on one checked out for each. On PostgreSQL appended
    rows announce themselves (a trigger). Migration 0008 has the lock-then-head function
    and the trigger."""

    def __init__(self, database: Database, connection: KeptConnection | None = None) -> None:
        self._database = database
        self._connection = connection
        self._process_lock = asyncio.Lock()
        self._expected_head: Head = (0, GENESIS_HASH)

    async def append_batch(self, records: Sequence[AuditRecord]) -> list[AuditEvent]:
        async with self._process_lock:
            events = await self._append_to_expected_head(records) or await self._append(records)
            self._expected_head = (events[-1].sequence, events[-1].hash)
            return events

    async def _append_to_expected_head(
        self, records: Sequence[AuditRecord]
    ) -> list[AuditEvent] | None:
        """The records sealed against the head this trail last wrote and inserted; None,
        nothing written, when another appender has moved the head since."""
        events = _sealed(records, self._expected_head)
        if self._database.is_postgres:
            return events if await self._insert_if_head_under_lock(events) else None
        rows = [_row(event) for event in events]
        try:
            async with self._connected() as connection:
                if len(rows) == 1:  # one statement, committed on its own
                    await connection.execute(_INSERT, rows[0])
                else:  # a savepoint: SQLite's own transaction on this connection
                    async with connection.begin_nested():
                        await connection.execute(_INSERT, rows)
        except IntegrityError:  # the next sequence was taken
            return None
        return events

    def _connected(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection on which each statement commits on its own."""
        return self._connection.use() if self._connection else self._database.autocommit()

    async def _insert_if_head_under_lock(self, events: Sequence[AuditEvent]) -> bool:
        rows = [_row(event) for event in events]
        columns: dict[str, Any] = {name: [row[name] for row in rows] for name in rows[0]}
        sequence, hash_ = self._expected_head
        parameters = {
            **columns,
            "key": AUDIT_APPEND_LOCK,
            "head_sequence": sequence,
            "head_hash": hash_,
        }
        async with self._connected() as connection:
            result = await connection.execute(_INSERT_IF_HEAD_UNDER_LOCK, parameters)
        return bool(result.rowcount)

    async def _append(self, records: Sequence[AuditRecord]) -> list[AuditEvent]:
        async with self._database.transaction() as connection:
            if self._database.is_postgres:
                head = await connection.execute(_HEAD_UNDER_LOCK, {"key": AUDIT_APPEND_LOCK})
            else:
                head = await connection.execute(_HEAD)
            found = head.first()
            events = _sealed(records, (found[0], found[1]) if found else (0, GENESIS_HASH))
            await connection.execute(_INSERT, [_row(event) for event in events])
        return events

    async def _fetch(self, query: Select[Any]) -> list[AuditEvent]:
        async with self._database.autocommit() as connection:  # one read: no BEGIN/COMMIT
            return [_event(row) for row in await connection.execute(query)]

    async def head(self) -> AuditEvent | None:
        found = await self._fetch(
            select(audit_events).order_by(audit_events.c.sequence.desc()).limit(1)
        )
        return found[0] if found else None

    async def get(self, sequence: int) -> AuditEvent | None:
        found = await self._fetch(select(audit_events).where(audit_events.c.sequence == sequence))
        return found[0] if found else None

    async def newest_first(
        self, where: AuditFilter, before_sequence: int | None, limit: int
    ) -> list[AuditEvent]:
        c = audit_events.c
        query = select(audit_events).order_by(c.sequence.desc()).limit(limit)
        if before_sequence is not None:
            query = query.where(c.sequence < before_sequence)
        if where.actor_id:
            query = query.where(c.actor_id == where.actor_id)
        if where.action:
            query = query.where(c.action == where.action)
        if where.resource_name:
            query = query.where(c.resource_name == where.resource_name)
        if where.outcome is not None:
            query = query.where(c.outcome == where.outcome.value)
        if where.start_time is not None:
            query = query.where(c.time >= where.start_time)
        if where.end_time is not None:
            query = query.where(c.time < where.end_time)
        return await self._fetch(query)

    async def ascending(self, from_sequence: int, to_sequence: int, limit: int) -> list[AuditEvent]:
        c = audit_events.c
        return await self._fetch(
            select(audit_events)
            .where(c.sequence >= from_sequence, c.sequence <= to_sequence)
            .order_by(c.sequence)
            .limit(limit)
        )

    async def first_sequence(self) -> int | None:
        async with self._database.autocommit() as connection:
            first: int | None = await connection.scalar(select(func.min(audit_events.c.sequence)))
            return first

    async def prune_before(self, cutoff: datetime) -> int:
        async with self._database.transaction() as connection:
            await connection.execute(
                update(audit_retention)
                .where(audit_retention.c.id == 1, audit_retention.c.prune_before < cutoff)
                .values(prune_before=cutoff)
            )
            result = await connection.execute(
                delete(audit_events).where(audit_events.c.time < cutoff)
            )
            return int(result.rowcount)
