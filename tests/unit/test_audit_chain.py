"""The hash chain detects altered fields, altered bytes, broken links and gaps."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keyhold.domain.audit.chain import DOMAIN_TAG, GENESIS_HASH, canonical_bytes, seal, verify_chain
from keyhold.domain.audit.events import ActorType, AuditEvent, AuditRecord, Outcome


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        event_id=f"e{n}",
        attempt_id=f"a{n}",
        time=datetime(2026, 1, 1, 0, 0, n, 123456, UTC),
        actor_type=ActorType.USER,
        actor_id="users/u1",
        action="audit.events.list",
        outcome=Outcome.SUCCEEDED,
        resource_type="audit-event",
        resource_name="audit-events",
        peer="ipv4:127.0.0.1:1",
        user_agent="ua",
        request_id="r",
        trace_id="",
        status_code=0,
        reason="",
        details={"b": "2", "a": "1"},
    )


def _chain(count: int) -> list[AuditEvent]:
    events, prev = [], GENESIS_HASH
    for n in range(1, count + 1):
        events.append(seal(n, prev, _record(n)))
        prev = events[-1].hash
    return events


def test_hash_is_sha256_of_tag_prev_and_canonical_bytes() -> None:
    event = _chain(1)[0]
    assert event.hash == hashlib.sha256(DOMAIN_TAG + GENESIS_HASH + event.canonical).digest()
    assert b'"time":"2026-01-01T00:00:01.123456Z"' in event.canonical
    assert b'"details":{"a":"1","b":"2"}' in event.canonical


def test_intact_chain_verifies() -> None:
    result = verify_chain(_chain(5), 1, GENESIS_HASH)
    assert (result.ok, result.checked_count, result.first_bad_sequence) == (True, 5, 0)


@pytest.mark.parametrize("field", ["actor_id", "outcome", "details", "time"])
def test_a_changed_stored_field_is_pinpointed(field: str) -> None:
    events = _chain(5)
    changes = {
        "actor_id": "users/evil",
        "outcome": Outcome.FAILED,
        "details": {"a": "9"},
        "time": datetime(2027, 1, 1, tzinfo=UTC),
    }
    events[2] = dataclasses.replace(
        events[2], record=dataclasses.replace(events[2].record, **{field: changes[field]})
    )
    result = verify_chain(events, 1, GENESIS_HASH)
    assert (result.ok, result.first_bad_sequence, result.checked_count) == (False, 3, 2)


def test_rewritten_canonical_bytes_break_the_hash() -> None:
    events = _chain(4)
    forged = dataclasses.replace(events[1].record, actor_id="users/evil")
    events[1] = dataclasses.replace(events[1], record=forged, canonical=canonical_bytes(2, forged))
    assert verify_chain(events, 1, GENESIS_HASH).first_bad_sequence == 2


def test_a_resealed_event_breaks_the_next_link() -> None:
    events = _chain(4)
    events[1] = seal(2, events[0].hash, dataclasses.replace(events[1].record, actor_id="x"))
    assert verify_chain(events, 1, GENESIS_HASH).first_bad_sequence == 3


def test_a_gap_is_pinpointed() -> None:
    events = _chain(5)
    del events[2]
    assert verify_chain(events, 1, GENESIS_HASH).first_bad_sequence == 3


def test_after_pruning_the_first_link_is_trusted() -> None:
    events = _chain(5)[2:]
    assert verify_chain(events, 3, None).ok
    assert not verify_chain(events, 3, GENESIS_HASH).ok


def test_a_known_record_keeps_its_known_hash() -> None:
    """Trails already stored must still verify: the canonical bytes and hash of this
    record were computed before the chained fields were derived from the record."""
    record = AuditRecord(
        event_id="01JEXAMPLEEVENT0000000000",
        attempt_id="01JEXAMPLEATTEMPT00000000",
        time=datetime(2026, 3, 14, 15, 9, 26, 535897, timezone(timedelta(hours=2))),
        actor_type=ActorType.SERVICE,
        actor_id="serviceAccounts/billing",
        action="identity.sessions.create",
        outcome=Outcome.DENIED,
        resource_type="session",
        resource_name="users/u-42/sessions/s-7",
        peer="ipv6:[::1]:50051",
        user_agent="grpc-python/1.70 café",
        request_id="req-9",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        status_code=7,
        reason="LOCKED_OUT",
        details={"zeta": "ü", "alpha": "1", "mid": 'x"y'},
    )
    event = seal(41, bytes(range(32)), record)
    assert (
        event.canonical
        == (
            '{"action":"identity.sessions.create","actor_id":"serviceAccounts/billing",'
            '"actor_type":"service","attempt_id":"01JEXAMPLEATTEMPT00000000",'
            '"details":{"alpha":"1","mid":"x\\"y","zeta":"ü"},'
            '"event_id":"01JEXAMPLEEVENT0000000000","outcome":"denied","peer":"ipv6:[::1]:50051",'
            '"reason":"LOCKED_OUT","request_id":"req-9","resource_name":"users/u-42/sessions/s-7",'
            '"resource_type":"session","sequence":41,"status_code":7,'
            '"time":"2026-03-14T13:09:26.535897Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
            '"user_agent":"grpc-python/1.70 café"}'
        ).encode()
    )
    assert event.hash.hex() == "2c8c98e72b0b3b71d18d69e5da17b50706c240102b6d5ecfa5c945ba347e5288"
