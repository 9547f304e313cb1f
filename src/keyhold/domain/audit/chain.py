"""The hash chain: canonical bytes of each record and SHA-256 links between them.

hash = SHA-256(DOMAIN_TAG ‖ prev_hash ‖ canonical). The canonical bytes are compact,
key-sorted UTF-8 JSON of the sequence and every field of the record (`CHAINED_FIELDS`,
read off `AuditRecord` itself: a field added to the record is chained). A stored row
can thus be checked both against its own canonical bytes and against its neighbours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum

from keyhold.domain.audit.events import AuditEvent, AuditRecord

DOMAIN_TAG = b"keyhold.audit.v1\x00"
GENESIS_HASH = bytes(32)

RECORD_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(AuditRecord))
# What each event's hash covers: its place in the chain and every field of its record.
CHAINED_FIELDS: tuple[str, ...] = ("sequence", *RECORD_FIELDS)


def _canonical_value(value: object) -> object:
    """The JSON form a field is hashed in; TypeError for a type with no canonical form,
    so that a new field cannot be hashed in a form that may change."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {key: _canonical_value(item) for key, item in sorted(value.items())}
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"an audit field of type {type(value).__name__} has no canonical form")


def canonical_bytes(sequence: int, record: AuditRecord) -> bytes:
    document: dict[str, object] = {"sequence": sequence}
    document.update((name, _canonical_value(getattr(record, name))) for name in RECORD_FIELDS)
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
