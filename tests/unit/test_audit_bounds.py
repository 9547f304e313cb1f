"""Audit records have a bounded size: long text is cut with a marker and the full value's
hash, surplus details are dropped and counted, and rate-limit refusals are recorded once
per key and window, then counted."""

from __future__ import annotations

import hashlib

import pytest

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.audit.throttling import ThrottledCalls, key_digest
from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.bounds import (
    DROPPED_DETAILS_KEY,
    MAX_DETAIL_VALUE_LENGTH,
    MAX_DETAILS,
    MAX_RESOURCE_NAME_LENGTH,
    bounded_details,
    bounded_text,
)
from keyhold.domain.audit.events import ActorType, Outcome
from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.principal import ANONYMOUS
from tests.support.fakes import FakeAuditAppender, FakeClock

LOGIN = "/keyhold.identity.v1.IdentityService/CreateSession"


def test_short_text_is_kept_and_long_text_ends_with_length_and_hash() -> None:
    assert bounded_text("users/1", 64) == "users/1"
    huge = "a" * 3_000_000 + "tail"
    cut = bounded_text(huge, 1024)
    assert len(cut) <= 1024
    assert cut.startswith("aaaa")
    assert f"{len(huge)} chars" in cut
    assert hashlib.sha256(huge.encode()).hexdigest() in cut


def test_details_over_the_ceiling_are_cut_and_counted() -> None:
    many = {f"k{i:03}": "v" for i in range(MAX_DETAILS + 10)}
    bounded = bounded_details(many)
    assert len(bounded) == MAX_DETAILS
    assert bounded[DROPPED_DETAILS_KEY] == "11"
    one_long = {"filter": "x" * 10_000, "count": "3"}
    bounded = bounded_details(one_long)
    assert set(bounded) == {"filter", "count"}
    assert len(bounded["filter"]) <= MAX_DETAIL_VALUE_LENGTH


async def test_a_recorded_three_megabyte_detail_becomes_a_bounded_record() -> None:
    set_current_call(CallContext(peer="ipv4:10.0.0.1:1", method=LOGIN))
    appender = FakeAuditAppender()
    recorder = AuditRecorder(appender, FakeClock())
    async with recorder.attempt(
        Action.AUDIT_EVENTS_LIST, "r" * 100_000, {"filter": "f" * (3 << 20)}
    ):
        pass
    outcome = appender.events[-1]
    assert len(outcome.canonical) < 8 * 1024
    assert len(outcome.record.resource_name) <= MAX_RESOURCE_NAME_LENGTH
    assert "truncated" in outcome.record.details["filter"]


def _refusal() -> ResourceExhausted:
    return ResourceExhausted("RATE_LIMITED", "x", 1.0, metadata={"limit": "10/minute"})


@pytest.fixture
def throttled() -> tuple[ThrottledCalls, FakeAuditAppender, FakeClock]:
    appender = FakeAuditAppender()
    clock = FakeClock()
    calls = ThrottledCalls(AuditRecorder(appender, clock), clock, records_per_window=5)
    return calls, appender, clock


async def test_each_key_is_recorded_once_a_window_with_the_reason(
    throttled: tuple[ThrottledCalls, FakeAuditAppender, FakeClock],
) -> None:
    calls, appender, _ = throttled
    call = CallContext(ANONYMOUS, "ipv4:10.0.0.9:4000", method=LOGIN)
    for _ in range(50):
        await calls.refused(call, _refusal(), "email:victim@example.com")
    (event,) = appender.events
    record = event.record
    assert (record.action, record.outcome) == (Action.RATE_LIMITED.value, Outcome.DENIED)
    assert (record.status_code, record.reason) == (8, "RATE_LIMITED")
    assert record.resource_name == LOGIN
    assert record.peer == "ipv4:10.0.0.9:4000"
    assert record.details["limit"] == "10/minute"
    assert record.details["key_sha256"] == key_digest("email:victim@example.com")
    assert "victim" not in event.canonical.decode()


async def test_a_flood_of_distinct_keys_writes_a_bounded_number_of_records(
    throttled: tuple[ThrottledCalls, FakeAuditAppender, FakeClock],
) -> None:
    calls, appender, clock = throttled
    call = CallContext(ANONYMOUS, "ipv4:10.0.0.9:4000", method=LOGIN)
    for i in range(5_000):
        await calls.refused(call, _refusal(), f"email:{i}@example.com")
    assert len(appender.events) == 5
    clock.advance(60)
    await calls.refused(call, _refusal(), "email:next@example.com")
    summary = appender.events[5].record
    assert summary.actor_type is ActorType.SYSTEM
    assert summary.details["refusals_not_recorded_singly"] == "4995"
    assert summary.resource_name == LOGIN
    assert appender.events[6].record.details["key_sha256"] == key_digest("email:next@example.com")


async def test_shutdown_records_the_count_of_the_window_under_way(
    throttled: tuple[ThrottledCalls, FakeAuditAppender, FakeClock],
) -> None:
    calls, appender, _ = throttled
    call = CallContext(ANONYMOUS, "ipv4:10.0.0.9:4000", method=LOGIN)
    for _ in range(3):
        await calls.refused(call, _refusal(), "peer:10.0.0.9")
    await calls.flush()
    assert [e.record.details.get("refusals_not_recorded_singly") for e in appender.events] == [
        None,
        "2",
    ]
