"""The hash chain: canonical bytes of each record and SHA-256 links between them.

hash = SHA-256(DOMAIN_TAG ‖ prev_hash ‖ canonical). The canonical bytes are compact,
key-sorted UTF-8 JSON of every field, the sequence included, so a stored row can be
checked both against its own canonical bytes and against its neighbours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC

from keyhold.domain.audit.events import AuditEvent, AuditRecord

DOMAIN_TAG = b"keyhold.audit.v1\x00"
GENESIS_HASH = bytes(32)


def canonical_bytes(sequence: int, record: AuditRecord) -> bytes:
    document = {
        "sequence": sequence,
        "event_id": record.event_id,
        "attempt_id": record.attempt_id,
        "time": record.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor_type": record.actor_type.value,
        "actor_id": record.actor_id,
        "action": record.action,
        "outcome": record.outcome.value,
        "resource_type": record.resource_type,
        "resource_name": record.resource_name,
        "peer": record.peer,
        "user_agent": record.user_agent,
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "status_code": record.status_code,
        "reason": record.reason,
        "details": dict(sorted(record.details.items())),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(DOMAIN_TAG + prev_hash + canonical).digest()


def seal(sequence: int, prev_hash: bytes, record: AuditRecord) -> AuditEvent:
    canonical = canonical_bytes(sequence, record)
    return AuditEvent(sequence, record, canonical, prev_hash, chain_hash(prev_hash, canonical))


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked_count: int
    first_bad_sequence: int
    last_hash: bytes


def verify_chain(
    events: Iterable[AuditEvent], first_sequence: int, prev_hash: bytes | None
) -> ChainCheck:
    """Check that `events` run gap-free from `first_sequence`, each linked to the one
    before (`prev_hash` None: trust the first event's stored link, as after pruning),
    each hash recomputing from its canonical bytes, and each row's fields matching
    those bytes."""
    expected_sequence, expected_prev, checked = first_sequence, prev_hash, 0
    last_hash = prev_hash or GENESIS_HASH
    for event in events:
        linked = expected_prev is None or event.prev_hash == expected_prev
        if (
            event.sequence != expected_sequence
            or not linked
            or canonical_bytes(event.sequence, event.record) != event.canonical
            or chain_hash(event.prev_hash, event.canonical) != event.hash
        ):
            return ChainCheck(False, checked, expected_sequence, last_hash)
        checked += 1
        expected_sequence += 1
        expected_prev = last_hash = event.hash
    return ChainCheck(True, checked, 0, last_hash)
