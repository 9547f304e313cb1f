"""The audit context: the hash-chained trail, the recorder every use case writes
attempts and outcomes through, and the reader behind AuditService."""

from __future__ import annotations

from dataclasses import dataclass

from keyhold.adapters.crypto.checkpoints import JwsCheckpointSigner
from keyhold.adapters.persistence.audit.audit_feed import LocalAuditFeed
from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
from keyhold.adapters.persistence.audit.audit_writer import BatchingAuditAppender
from keyhold.adapters.persistence.database import Database
from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.audit.throttling import ThrottledCalls
from keyhold.application.audit.trail import AuditTrailReader
from keyhold.wiring.platform import Platform


@dataclass(frozen=True, slots=True)
class Audit:
    trail: SqlAuditTrail
    feed: LocalAuditFeed  # appends of this process now; other replicas' via `announced`
    recorder: AuditRecorder
    throttled_calls: ThrottledCalls  # rate-limited calls, recorded in batches
    reader: AuditTrailReader


def audit_trail(database: Database, pool_size: int) -> SqlAuditTrail:
    """On PostgreSQL the appends keep a connection of the pool, if it has one to spare.
    On SQLite they check one out each time: a connection kept for them made concurrent
    writers wait on SQLite's lock (see docs/benchmarks.md)."""
    keep = database.is_postgres and pool_size > 1
    return SqlAuditTrail(database, database.kept_connection() if keep else None)


def wire_audit(platform: Platform) -> Audit:
    trail = audit_trail(platform.database, platform.settings.database_pool_size)
    feed = LocalAuditFeed()
    recorder = AuditRecorder(
        BatchingAuditAppender(trail, feed.published), platform.clock, platform.telemetry
    )
    return Audit(
        trail=trail,
        feed=feed,
        recorder=recorder,
        throttled_calls=ThrottledCalls(recorder, platform.clock),
        reader=AuditTrailReader(
            trail,
            feed,
            recorder,
            JwsCheckpointSigner(platform.key_ring),
            platform.clock,
            issuer=platform.settings.issuer,
        ),
    )
