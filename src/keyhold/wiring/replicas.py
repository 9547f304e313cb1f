"""What other replicas announce through PostgreSQL: audit appends (streams wake),
revocations (caches forget) and signing-key rotations (rings reload)."""

from __future__ import annotations

import asyncio

from keyhold.adapters.persistence.notifications import (
    AUDIT_CHANNEL,
    REVOCATION_CHANNEL,
    PostgresListener,
    parse_revocation,
)
from keyhold.application.identity.revocations import SIGNING_KEY
from keyhold.wiring.audit import Audit
from keyhold.wiring.identity import Identity
from keyhold.wiring.platform import Platform


class RevocationAnnouncements:
    """Applies another replica's revocation notice to this process."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._reloads: set[asyncio.Task[None]] = set()  # strong references until done

    def __call__(self, payload: str) -> None:
        kind, ids = parse_revocation(payload)
        if kind != SIGNING_KEY:
            self._identity.revocations.apply(kind, ids)
            return
        task = asyncio.create_task(self._identity.key_ring.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


def replica_listener(
    platform: Platform, audit: Audit, identity: Identity
) -> PostgresListener | None:
    """None on SQLite, which has no other replicas."""
    if not platform.database.is_postgres:
        return None
    return PostgresListener(
        platform.settings.resolved_database_url,
        {
            AUDIT_CHANNEL: audit.feed.announced,
            REVOCATION_CHANNEL: RevocationAnnouncements(identity),
        },
    )
