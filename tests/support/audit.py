"""The audit components on a real database, without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from keyhold.adapters.persistence.audit.audit_feed import LocalAuditFeed
from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
from keyhold.adapters.persistence.audit.audit_writer import BatchingAuditAppender
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.migrate import migrate
from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.events import ActorType, AuditRecord, Outcome
from keyhold.wiring.audit import audit_trail
from tests.support.engines import engine_for
from tests.support.fakes import FakeClock
from tests.support.servers import settings_for


@dataclass
class AuditStack:
    database: Database
    trail: SqlAuditTrail
    feed: LocalAuditFeed
    appender: BatchingAuditAppender
    recorder: AuditRecorder
    clock: FakeClock


@asynccontextmanager
async def audit_stack(data_dir: Path, database_url: str | None) -> AsyncIterator[AuditStack]:
    settings = settings_for(data_dir, database_url)
    database = Database(engine_for(settings))
    await migrate(database.engine)
    trail = audit_trail(database, settings.database_pool_size)
    feed = LocalAuditFeed()
    appender = BatchingAuditAppender(trail, feed.published)
    clock = FakeClock()
    try:
        yield AuditStack(database, trail, feed, appender, AuditRecorder(appender, clock), clock)
    finally:
        await database.dispose()


@dataclass
class Attempts:
    """The audit records of one action, grouped by attempt: what each attempt's
    resource was and which outcomes were recorded for it, in order."""

    outcomes: dict[str, list[str]]  # attempt id → ["attempted", "succeeded"], …
    resources: dict[str, str]  # attempt id → resource name of its last record

    def resources_with(self, outcome: str) -> list[str]:
        return [self.resources[a] for a, seen in self.outcomes.items() if outcome in seen]

    def unfinished(self) -> list[str]:
        """Attempts with an ATTEMPTED record and no outcome."""
        return [a for a, seen in self.outcomes.items() if seen == ["attempted"]]

    def malformed(self) -> list[str]:
        """Attempts that do not read ATTEMPTED then at most one outcome."""
        return [
            a
            for a, seen in self.outcomes.items()
            if seen[0] != "attempted" or len(seen) > 2 or "attempted" in seen[1:]
        ]


async def attempts_of(database_url: str, action: str) -> Attempts:
    """Read `action`'s audit records straight from the database at `database_url`."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT attempt_id, outcome, resource_name FROM audit_events "
                        "WHERE action = :action ORDER BY sequence"
                    ),
                    {"action": action},
                )
            ).all()
    finally:
        await engine.dispose()
    attempts = Attempts({}, {})
    for attempt_id, outcome, resource_name in rows:
        attempts.outcomes.setdefault(attempt_id, []).append(outcome)
        attempts.resources[attempt_id] = resource_name
    return attempts


def system_record(index: int = 0) -> AuditRecord:
    """A record of the system's own, told apart from others by `index` (its event id)."""
    return AuditRecord(
        event_id=f"{index:032x}",
        attempt_id="a" * 32,
        time=datetime.now(UTC),
        actor_type=ActorType.SYSTEM,
        actor_id="system",
        action=Action.AUDIT_EVENTS_LIST,
        outcome=Outcome.SUCCEEDED,
        resource_type="",
        resource_name="audit-events",
        peer="",
        user_agent="",
        request_id="",
        trace_id="",
        status_code=0,
        reason="",
        details={},
    )
