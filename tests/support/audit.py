"""The audit components on a real database, without a server."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.persistence.audit_feed import LocalAuditFeed
from keyhold.adapters.persistence.audit_trail import SqlAuditTrail
from keyhold.adapters.persistence.audit_writer import BatchingAuditAppender
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.migrate import migrate
from keyhold.application.audit.recorder import AuditRecorder
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
    key = base64.b64encode(os.urandom(32)).decode()
    database = Database(create_engine(settings), AeadKeyRing.parse(f"k1:{key}"))
    await migrate(database.engine)
    trail = SqlAuditTrail(database)
    feed = LocalAuditFeed()
    appender = BatchingAuditAppender(trail, feed.published)
    clock = FakeClock()
    try:
        yield AuditStack(database, trail, feed, appender, AuditRecorder(appender, clock), clock)
    finally:
        await database.dispose()
