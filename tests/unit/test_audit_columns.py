"""The audit table stores exactly what the hash chain covers, and the chain covers
every field of the record: a column or field added on one side only fails here."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyhold.adapters.persistence.tables import audit_events
from keyhold.domain.audit.chain import CHAINED_FIELDS, RECORD_FIELDS, canonical_bytes, seal
from keyhold.domain.audit.events import ActorType, AuditRecord, Outcome

# What the chain stores about itself rather than covers.
_LINK_COLUMNS = {"canonical", "prev_hash", "hash"}


def test_every_audit_column_is_chained_and_every_chained_field_stored() -> None:
    stored = set(audit_events.c.keys()) - _LINK_COLUMNS
    assert sorted(stored - set(CHAINED_FIELDS)) == [], "stored but not chained"
    assert sorted(set(CHAINED_FIELDS) - stored) == [], "chained but not stored"


def test_the_chain_covers_every_field_of_the_record() -> None:
    assert set(CHAINED_FIELDS) == {"sequence"} | {f.name for f in dataclasses.fields(AuditRecord)}


_RECORD = AuditRecord(
    event_id="e1",
    attempt_id="a1",
    time=datetime(2026, 1, 1, tzinfo=UTC),
    actor_type=ActorType.USER,
    actor_id="users/u1",
    action="audit.events.list",
    outcome=Outcome.SUCCEEDED,
    resource_type="audit-event",
    resource_name="audit-events",
    peer="ipv4:127.0.0.1:1",
    user_agent="ua",
    request_id="r",
    trace_id="t",
    status_code=0,
    reason="",
    details={"a": "1"},
)


def _other(value: object) -> Any:
    if isinstance(value, datetime):
        return value + timedelta(microseconds=1)
    if isinstance(value, ActorType):
        return ActorType.SERVICE
    if isinstance(value, Outcome):
        return Outcome.FAILED
    if isinstance(value, dict):
        return {**value, "a": "2"}
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"no other value of type {type(value).__name__}")


@pytest.mark.parametrize("name", RECORD_FIELDS)
def test_changing_any_field_changes_the_hash(name: str) -> None:
    changed = dataclasses.replace(_RECORD, **{name: _other(getattr(_RECORD, name))})
    assert canonical_bytes(1, changed) != canonical_bytes(1, _RECORD)
    assert seal(1, bytes(32), changed).hash != seal(1, bytes(32), _RECORD).hash


def test_a_field_with_no_canonical_form_fails_loudly() -> None:
    odd = dataclasses.replace(_RECORD, reason=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no canonical form"):
        canonical_bytes(1, odd)
