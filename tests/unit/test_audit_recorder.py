"""Attempt → outcome recording, with an in-memory appender."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from keyhold.application.audit.recorder import AuditRecorder, AuditUnavailable
from keyhold.domain.audit.actions import REGISTRY, Action
from keyhold.domain.audit.events import ActorType, Outcome
from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from tests.support.fakes import FakeAuditAppender, FakeClock


@pytest.fixture
def appender() -> FakeAuditAppender:
    return FakeAuditAppender()


@pytest.fixture
def recorder(appender: FakeAuditAppender) -> AuditRecorder:
    set_current_call(
        CallContext(
            principal=Principal(PrincipalType.USER, "users/u1", frozenset({"user"})),
            peer="ipv4:10.1.2.3:5555",
            user_agent="grpc-python/1.85",
            request_id="req-1",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            method="/keyhold.audit.v1.AuditService/ListAuditEvents",
        )
    )
    return AuditRecorder(appender, FakeClock())


async def test_success_writes_attempt_then_outcome(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    async with recorder.attempt(Action.AUDIT_EVENTS_LIST, "audit-events", {"a": "1"}) as at:
        assert [e.record.outcome for e in appender.events] == [Outcome.ATTEMPTED]
        at.details["returned"] = "3"
    attempted, succeeded = (e.record for e in appender.events)
    assert succeeded.outcome is Outcome.SUCCEEDED
    assert attempted.attempt_id == succeeded.attempt_id
    assert attempted.event_id != succeeded.event_id
    assert attempted.details == {}
    assert succeeded.details == {"a": "1", "returned": "3"}
    assert succeeded.actor_type is ActorType.USER
    assert succeeded.actor_id == "users/u1"
    assert succeeded.peer == "ipv4:10.1.2.3:5555"
    assert succeeded.user_agent == "grpc-python/1.85"
    assert succeeded.request_id == "req-1"
    assert succeeded.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert succeeded.resource_type == REGISTRY[Action.AUDIT_EVENTS_LIST].resource_type
    assert succeeded.resource_name == "audit-events"
    assert succeeded.time.tzinfo is UTC
    assert (succeeded.status_code, succeeded.reason) == (0, "")


@pytest.mark.parametrize(
    ("error", "outcome", "code"),
    [
        (FailedPrecondition("AUDIT_TRAIL_EMPTY", "x"), Outcome.FAILED, 9),
        (PermissionDenied("NOT_RESOURCE_OWNER", "x"), Outcome.DENIED, 7),
        (Unauthenticated("TOKEN_EXPIRED", "x"), Outcome.DENIED, 16),
    ],
)
async def test_domain_errors_become_failed_or_denied(
    recorder: AuditRecorder,
    appender: FakeAuditAppender,
    error: Exception,
    outcome: Outcome,
    code: int,
) -> None:
    with pytest.raises(type(error)):
        async with recorder.attempt(Action.AUDIT_EVENT_GET, "audit-events/9"):
            raise error
    final = appender.events[-1].record
    assert len(appender.events) == 2
    assert (final.outcome, final.status_code, final.reason) == (outcome, code, error.reason)  # type: ignore[attr-defined]


async def test_unexpected_errors_are_recorded_as_internal_failures(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with recorder.attempt(Action.AUDIT_EVENT_GET):
            _ = 1 / 0
    final = appender.events[-1].record
    assert (final.outcome, final.status_code, final.reason) == (Outcome.FAILED, 13, "INTERNAL")


async def test_cancellation_is_recorded(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    started = asyncio.Event()

    async def work() -> None:
        async with recorder.attempt(Action.AUDIT_EVENTS_STREAM, cancellation_succeeds=True):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    final = appender.events[-1].record
    assert (final.outcome, final.status_code, final.reason) == (Outcome.SUCCEEDED, 1, "CANCELLED")


async def test_unwritable_trail_stops_the_work(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    appender.fail_after = 0
    ran = False
    with pytest.raises(AuditUnavailable) as caught:
        async with recorder.attempt(Action.AUDIT_EVENTS_LIST):
            ran = True
    assert not ran
    assert caught.value.code == 14
    assert caught.value.reason == "AUDIT_UNAVAILABLE"
    assert caught.value.metadata == {"performed": "false"}
    assert "not performed" in caught.value.message


async def test_unwritable_outcome_fails_the_action(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    appender.fail_after = 1
    with pytest.raises(AuditUnavailable) as caught:
        async with recorder.attempt(Action.AUDIT_EVENTS_LIST):
            pass
    # The work was done: the caller is told so, not that nothing happened.
    assert caught.value.metadata == {"performed": "true"}
    assert "the action was done" in caught.value.message


async def test_unregistered_actions_are_refused(recorder: AuditRecorder) -> None:
    with pytest.raises(TypeError, match="not a registered audit action"):
        async with recorder.attempt("identity.made.up"):  # type: ignore[arg-type]
            pass


async def test_denials_name_the_method_action(
    recorder: AuditRecorder, appender: FakeAuditAppender
) -> None:
    call = CallContext(peer="ipv6:[::1]:1", method="/keyhold.audit.v1.AuditService/GetAuditEvent")
    await recorder.record_denial(call, Unauthenticated("CREDENTIALS_MISSING", "x"))
    call = CallContext(peer="ipv6:[::1]:1", method="/keyhold.identity.v1.IdentityService/WhoAmI")
    await recorder.record_denial(call, Unauthenticated("TOKEN_EXPIRED", "x"))
    first, second = (e.record for e in appender.events)
    assert (first.action, first.outcome, first.status_code) == (
        "audit.event.get",
        Outcome.DENIED,
        16,
    )
    assert first.actor_type is ActorType.ANONYMOUS
    assert first.peer == "ipv6:[::1]:1"
    assert (second.action, second.reason) == ("access.denied", "TOKEN_EXPIRED")
    assert second.resource_name == "/keyhold.identity.v1.IdentityService/WhoAmI"
