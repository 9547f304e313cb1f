"""Recording audited actions: ATTEMPTED before the work, exactly one outcome after it.

    async with recorder.attempt(Action.X, resource_name="users/1") as attempt:
        ...                              # the work; raise a DomainError to fail or deny
        attempt.details["count"] = "3"   # non-secret facts for the outcome record

Each record is appended in its own transaction, so the outcome survives a rolled-back
business transaction. If the trail cannot be written, the action fails with
UNAVAILABLE rather than proceeding unaudited.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

import structlog

from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.audit.actions import REGISTRY, Action, action_for_rpc
from keyhold.domain.audit.bounds import (
    MAX_CONTEXT_LENGTH,
    MAX_RESOURCE_NAME_LENGTH,
    bounded_details,
    bounded_text,
)
from keyhold.domain.audit.events import ActorType, AuditRecord, Outcome
from keyhold.domain.audit.ports import AuditAppender
from keyhold.domain.call import CallContext, current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import (
    DomainError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from keyhold.domain.principal import PrincipalType

log = structlog.get_logger(__name__)

_ACTOR_TYPES = {
    PrincipalType.USER: ActorType.USER,
    PrincipalType.SERVICE: ActorType.SERVICE,
    PrincipalType.ANONYMOUS: ActorType.ANONYMOUS,
    PrincipalType.SYSTEM: ActorType.SYSTEM,
}
CANCELLED, INTERNAL = 1, 13


@dataclass
class Attempt:
    """An action under way; the handler may name its resource and add details."""

    action: Action
    attempt_id: str
    resource_name: str
    details: dict[str, str] = field(default_factory=dict)


class AuditUnavailable(Unavailable):
    """`performed`: the work was done and only its SUCCEEDED record could not be
    confirmed written (the store failed before answering: the record may be there or
    not); the caller must not be told that nothing happened."""

    def __init__(self, *, performed: bool = False) -> None:
        super().__init__(
            "AUDIT_UNAVAILABLE",
            "the action was done but its outcome could not be confirmed in the audit trail; "
            "check its effect before retrying"
            if performed
            else "the audit trail cannot be written; the action was not performed",
            domain="keyhold.audit",
            metadata={"performed": "true" if performed else "false"},
        )


class AuditRecorder:
    def __init__(
        self, appender: AuditAppender, clock: Clock, telemetry: Telemetry = NO_TELEMETRY
    ) -> None:
        self._appender = appender
        self._clock = clock
        self._telemetry = telemetry

    @asynccontextmanager
    async def attempt(
        self,
        action: Action,
        resource_name: str = "",
        details: dict[str, str] | None = None,
        *,
        cancellation_succeeds: bool = False,
    ) -> AsyncIterator[Attempt]:
        """`cancellation_succeeds`: for streams, which end when the client goes away."""
        if not isinstance(action, Action):
            raise TypeError(f"{action!r} is not a registered audit action")
        attempt = Attempt(action, uuid.uuid4().hex, resource_name, dict(details or {}))
        await self._write(attempt, Outcome.ATTEMPTED, 0, "")
        try:
            yield attempt
        except DomainError as error:
            denial = error.denial_reason if isinstance(error, ResourceExhausted) else ""
            denied = bool(denial) or isinstance(error, PermissionDenied | Unauthenticated)
            await self._write(
                attempt,
                Outcome.DENIED if denied else Outcome.FAILED,
                error.code,
                denial or error.reason,
            )
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = Outcome.SUCCEEDED if cancellation_succeeds else Outcome.FAILED
            await asyncio.shield(self._write(attempt, outcome, CANCELLED, "CANCELLED"))
            raise
        except Exception:
            await self._write(attempt, Outcome.FAILED, INTERNAL, "INTERNAL")
            raise
        try:
            await self._write(attempt, Outcome.SUCCEEDED, 0, "")
        except AuditUnavailable as exc:
            raise AuditUnavailable(performed=True) from exc.__cause__

    def read_of(
        self,
        action: Action,
        resource_name: str,
        owner: str,
        details: dict[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Attempt | None]:
        """Recorded like `attempt` when the caller reads data that `owner` (a subject
        such as `users/{id}`) holds and the caller is someone else; a caller reading
        its own data is not recorded (yields None)."""
        if current_call().principal.subject == owner:
            return nullcontext(None)
        return self.attempt(action=action, resource_name=resource_name, details=details)

    async def record_denial(self, call: CallContext, error: DomainError) -> None:
        """A call refused before its handler (authentication or authorization). The
        record names the resource the call aimed at when the refusal says which
        (`DomainError.resource`), else the method."""
        action = action_for_rpc(call.method) or Action.ACCESS_DENIED
        await self.record_refusal(
            call, error, action, error.resource or call.method, {"method": call.method}
        )

    async def record_refusal(
        self,
        call: CallContext,
        error: DomainError,
        action: Action,
        resource_name: str,
        details: dict[str, str],
    ) -> None:
        """One DENIED record, with no attempt before it, for a call refused outright.
        A trail that cannot be written is logged: the refusal stands either way."""
        attempt = Attempt(action, uuid.uuid4().hex, resource_name, details)
        try:
            await self._write(attempt, Outcome.DENIED, error.code, error.reason, call)
        except AuditUnavailable:
            log.error("audit_denial_not_recorded", method=call.method, reason=error.reason)

    async def _write(
        self,
        attempt: Attempt,
        outcome: Outcome,
        status_code: int,
        reason: str,
        call: CallContext | None = None,
    ) -> None:
        call = call or current_call()
        principal = call.principal
        record = AuditRecord(
            event_id=uuid.uuid4().hex,
            attempt_id=attempt.attempt_id,
            time=self._clock.now(),
            actor_type=_ACTOR_TYPES[principal.type],
            actor_id=principal.subject,
            action=attempt.action.value,
            outcome=outcome,
            resource_type=REGISTRY[attempt.action].resource_type,
            resource_name=bounded_text(attempt.resource_name, MAX_RESOURCE_NAME_LENGTH),
            peer=bounded_text(call.peer, MAX_CONTEXT_LENGTH),
            user_agent=bounded_text(call.user_agent, MAX_CONTEXT_LENGTH),
            request_id=bounded_text(call.request_id, MAX_CONTEXT_LENGTH),
            trace_id=bounded_text(call.trace_id, MAX_CONTEXT_LENGTH),
            status_code=status_code,
            reason=reason,
            details=bounded_details(attempt.details) if outcome is not Outcome.ATTEMPTED else {},
        )
        try:
            await self._appender.append(record)
        except Unavailable as exc:
            raise AuditUnavailable() from exc
        self._telemetry.audit_appended(outcome.value)
