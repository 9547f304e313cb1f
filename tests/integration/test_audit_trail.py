"""The audit trail on SQLite and PostgreSQL: gap-free chains under concurrency,
append-only enforcement, tamper detection, rollback independence and retention."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event as engine_events
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
from keyhold.application.audit.trail import verify_trail
from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.events import Outcome
from keyhold.domain.errors import FailedPrecondition, Unavailable
from tests.support.audit import AuditStack, audit_stack, system_record
from tests.support.databases import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStack]:
    if request.param == "sqlite":
        async with audit_stack(tmp_path, None) as built:
            yield built
    else:
        async with postgres_database() as url, audit_stack(tmp_path, url) as built:
            yield built


async def _record(stack: AuditStack, count: int) -> None:
    for _ in range(count):
        async with stack.recorder.attempt(Action.AUDIT_EVENTS_LIST, "audit-events"):
            pass


async def test_concurrent_appends_form_one_unbroken_chain(stack: AuditStack) -> None:
    writers = 200 if stack.database.is_postgres else 50
    await asyncio.gather(*(_record(stack, 1) for _ in range(writers)))
    report = await verify_trail(stack.trail, 0, 0)
    assert report.ok
    assert report.checked_count == report.head_sequence == 2 * writers
    events = await stack.trail.ascending(1, 10_000, 10_000)
    assert [e.sequence for e in events] == list(range(1, 2 * writers + 1))
    by_attempt: dict[str, list[Outcome]] = {}
    for event in events:
        by_attempt.setdefault(event.record.attempt_id, []).append(event.record.outcome)
    assert all(o == [Outcome.ATTEMPTED, Outcome.SUCCEEDED] for o in by_attempt.values())


@pytest.mark.postgres
async def test_two_appenders_on_postgres_share_one_chain(tmp_path: Path) -> None:
    """Two replicas: separate processes' locks do not serialise them; the advisory lock does."""
    async with (
        postgres_database() as url,
        audit_stack(tmp_path / "a", url) as first,
        audit_stack(tmp_path / "b", url) as second,
    ):
        await asyncio.gather(*(_record(s, 5) for s in (first, second) for _ in range(20)))
        report = await verify_trail(first.trail, 0, 0)
    assert (report.ok, report.checked_count) == (True, 400)


async def test_update_delete_and_truncate_are_refused(stack: AuditStack) -> None:
    await _record(stack, 2)
    statements = [
        "UPDATE audit_events SET actor_id = 'users/evil' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 2",
        "DELETE FROM audit_events",
    ]
    if stack.database.is_postgres:
        statements.append("TRUNCATE audit_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            async with stack.database.engine.begin() as connection:
                await connection.execute(text(statement))
    assert (await verify_trail(stack.trail, 0, 0)).checked_count == 4


async def _tamper(stack: AuditStack, statement: str) -> None:
    async with stack.database.engine.begin() as connection:
        if stack.database.is_postgres:
            await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            await connection.execute(text(statement))
            await connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        else:
            await connection.execute(text("DROP TRIGGER audit_events_no_update"))
            await connection.execute(text(statement))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor_id = 'users/someone-else' WHERE sequence = 7",
        "UPDATE audit_events SET outcome = 'succeeded' WHERE sequence = 7",
        'UPDATE audit_events SET details = \'{"x": "1"}\' WHERE sequence = 7',
    ],
)
async def test_verifier_pinpoints_a_tampered_row(stack: AuditStack, statement: str) -> None:
    await _record(stack, 6)
    await _tamper(stack, statement)
    report = await verify_trail(stack.trail, 0, 0)
    assert (report.ok, report.first_bad_sequence, report.checked_count) == (False, 7, 6)
    assert (await verify_trail(stack.trail, 8, 12)).ok  # later links are intact on their own


async def test_outcome_survives_a_rolled_back_business_transaction(stack: AuditStack) -> None:
    async def failing_business_work() -> None:
        async with (
            stack.recorder.attempt(Action.AUDIT_CHECKPOINT_GET, "audit-events"),
            stack.database.transaction() as business,
        ):
            await business.execute(
                text("UPDATE audit_retention SET prune_before = prune_before WHERE id = 1")
            )
            raise FailedPrecondition("AUDIT_TRAIL_EMPTY", "rolled back")

    with pytest.raises(FailedPrecondition):
        await failing_business_work()
    events = await stack.trail.ascending(1, 10, 10)
    assert [e.record.outcome for e in events] == [Outcome.ATTEMPTED, Outcome.FAILED]
    assert events[1].record.reason == "AUDIT_TRAIL_EMPTY"


async def test_retention_prunes_old_records_and_the_rest_still_verifies(stack: AuditStack) -> None:
    await _record(stack, 3)
    stack.clock.advance(86_400 * 10)
    await _record(stack, 2)
    cutoff = stack.clock.now() - __import__("datetime").timedelta(days=5)
    assert await stack.trail.prune_before(cutoff) == 6
    assert await stack.trail.first_sequence() == 7
    report = await verify_trail(stack.trail, 0, 0)
    assert (report.ok, report.checked_count, report.head_sequence) == (True, 4, 10)
    with pytest.raises(DBAPIError, match="append-only"):
        async with stack.database.engine.begin() as connection:
            await connection.execute(text("DELETE FROM audit_events WHERE sequence = 7"))


async def test_cli_verify_reports_ok_and_broken(tmp_path: Path) -> None:
    async with audit_stack(tmp_path, None) as stack:
        await _record(stack, 3)
    env = {**os.environ, "KEYHOLD_DATA_DIR": str(tmp_path)}

    async def verify() -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keyhold.cli",
            "audit",
            "verify",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode()

    code, out = await verify()
    assert (code, out.strip().splitlines()[-1].split(":")[0]) == (0, "audit chain OK")
    assert "checked 6 events" in out
    async with audit_stack(tmp_path, None) as stack:
        await _tamper(stack, "UPDATE audit_events SET reason = 'X' WHERE sequence = 4")
    code, out = await verify()
    assert code == 2
    assert "BROKEN" in out
    assert "first bad sequence 4" in out


async def test_an_appender_whose_remembered_head_is_stale_appends_after_the_real_one(
    stack: AuditStack,
) -> None:
    """Another process appended since this one last did: its records, sealed against the
    head it remembers, are not written there; they follow the real head."""
    other = SqlAuditTrail(stack.database)  # another process's trail on the same database
    await _record(stack, 2)  # this process: sequences 1-4, head remembered
    await other.append_batch([system_record()])  # the other: 5, unknown to this process
    await _record(stack, 1)  # this process expects 4: must not write there
    report = await verify_trail(stack.trail, 0, 0)
    assert (report.ok, report.checked_count, report.head_sequence) == (True, 7, 7)


@pytest.mark.postgres
async def test_an_append_after_the_head_it_last_wrote_is_one_statement_on_postgres(
    tmp_path: Path,
) -> None:
    """While no other replica appends, an append needs no transaction of its own and no
    read of the head: one statement checks the head under the lock and inserts."""
    async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
        await _record(stack, 1)  # the first append reads the head
        statements: list[str] = []
        transactions: list[Connection] = []

        def on_statement(
            connection: Connection, cursor: object, statement: str, *_: object
        ) -> None:
            statements.append(statement)

        def on_begin(connection: Connection) -> None:
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                transactions.append(connection)

        engine = stack.database.engine.sync_engine
        engine_events.listen(engine, "before_cursor_execute", on_statement)
        engine_events.listen(engine, "begin", on_begin)
        await _record(stack, 1)  # an attempt and its outcome: two appends
        assert (len(statements), transactions) == (2, [])
        assert all(statement.startswith("INSERT INTO audit_events") for statement in statements)
        report = await verify_trail(stack.trail, 0, 0)
        assert (report.ok, report.checked_count) == (True, 4)


async def test_an_append_on_sqlite_is_one_statement_in_no_transaction(tmp_path: Path) -> None:
    """Its every write takes SQLite's write lock first: one statement inserts a record,
    committed on its own; several go in under a savepoint, which is a transaction of its
    own on a connection outside one (all or none)."""
    async with audit_stack(tmp_path, None) as stack:
        await _record(stack, 1)
        statements: list[str] = []

        def on_statement(
            connection: Connection, cursor: object, statement: str, *_: object
        ) -> None:
            statements.append(statement)

        engine_events.listen(
            stack.database.engine.sync_engine, "before_cursor_execute", on_statement
        )
        await stack.trail.append_batch([system_record(1)])
        await stack.trail.append_batch([system_record(2), system_record(3)])
        assert [statement.split(" (")[0] for statement in statements] == [
            "INSERT INTO audit_events",
            "SAVEPOINT sa_savepoint_1",
            "INSERT INTO audit_events",
            "RELEASE SAVEPOINT sa_savepoint_1",
        ]
        report = await verify_trail(stack.trail, 0, 0)
        assert (report.ok, report.checked_count) == (True, 5)


@pytest.mark.postgres
async def test_appends_go_on_after_the_connection_kept_for_them_is_lost(tmp_path: Path) -> None:
    """The connection the appends keep is ended by the server: that append fails as
    unavailable, writing nothing, and the next one takes a new connection."""
    async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
        await _record(stack, 1)
        async with stack.database.autocommit() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        with pytest.raises(Unavailable):
            await stack.trail.append_batch([system_record()])
        await _record(stack, 1)
        report = await verify_trail(stack.trail, 0, 0)
        assert (report.ok, report.checked_count, report.head_sequence) == (True, 4, 4)
