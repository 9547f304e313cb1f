"""keyhold.audit.v1.AuditService."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from keyhold.application.audit.trail import AuditTrailReader
from keyhold.audit.v1 import audit_service_pb2 as pb
from keyhold.audit.v1 import audit_service_pb2_grpc as pb_grpc
from keyhold.domain.audit.events import ActorType, AuditEvent, AuditFilter, Outcome
from keyhold.domain.errors import FieldViolation, InvalidArgument

_ACTOR_TYPES = {
    ActorType.USER: pb.ACTOR_TYPE_USER,
    ActorType.SERVICE: pb.ACTOR_TYPE_SERVICE,
    ActorType.ANONYMOUS: pb.ACTOR_TYPE_ANONYMOUS,
    ActorType.SYSTEM: pb.ACTOR_TYPE_SYSTEM,
}
_OUTCOMES = {
    Outcome.ATTEMPTED: pb.OUTCOME_ATTEMPTED,
    Outcome.SUCCEEDED: pb.OUTCOME_SUCCEEDED,
    Outcome.FAILED: pb.OUTCOME_FAILED,
    Outcome.DENIED: pb.OUTCOME_DENIED,
}
_OUTCOME_FILTERS: dict[int, Outcome | None] = {
    pb.OUTCOME_UNSPECIFIED: None,
    **{number: outcome for outcome, number in _OUTCOMES.items()},
}
_DOMAIN = "keyhold.audit"
_SEQUENCE = re.compile(r"[0-9]{1,18}")


def event_message(event: AuditEvent) -> pb.AuditEvent:
    record = event.record
    message = pb.AuditEvent(
        name=f"audit-events/{event.sequence}",
        sequence=event.sequence,
        event_id=record.event_id,
        attempt_id=record.attempt_id,
        actor_type=_ACTOR_TYPES[record.actor_type],
        actor_id=record.actor_id,
        action=record.action,
        outcome=_OUTCOMES[record.outcome],
        resource_type=record.resource_type,
        resource_name=record.resource_name,
        peer=record.peer,
        user_agent=record.user_agent,
        request_id=record.request_id,
        trace_id=record.trace_id,
        status_code=record.status_code,
        reason=record.reason,
        details=dict(record.details),
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
    )
    message.time.FromDatetime(record.time)
    return message


def _sequence_from_name(name: str) -> int:
    number = name.removeprefix("audit-events/")
    # ASCII digits only: str.isdigit() and int() also take superscripts and full-width
    # or other scripts' digits.
    if number == name or not _SEQUENCE.fullmatch(number):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            "name must be audit-events/{sequence}",
            [FieldViolation("name", "expected audit-events/{sequence}")],
            domain=_DOMAIN,
        )
    return int(number)


def _filter(request: pb.ListAuditEventsRequest) -> AuditFilter:
    if request.outcome not in _OUTCOME_FILTERS:
        raise InvalidArgument(
            "OUTCOME_INVALID",
            "outcome is not a known value",
            [FieldViolation("outcome", "use an Outcome enum value")],
            domain=_DOMAIN,
        )
    return AuditFilter(
        actor_id=request.actor,
        action=request.action,
        resource_name=request.resource,
        outcome=_OUTCOME_FILTERS[request.outcome],
        start_time=_time(request, "start_time"),
        end_time=_time(request, "end_time"),
    )


def _time(request: pb.ListAuditEventsRequest, field: str) -> datetime | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    try:
        return getattr(request, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgument(
            "TIME_INVALID",
            f"{field} is out of range",
            [FieldViolation(field, "must be a valid timestamp")],
            domain=_DOMAIN,
        ) from exc


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, reader: AuditTrailReader) -> None:
        self._reader = reader

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Any
    ) -> pb.ListAuditEventsResponse:
        page = await self._reader.list(_filter(request), request.page_size, request.page_token)
        return pb.ListAuditEventsResponse(
            events=[event_message(e) for e in page.events], next_page_token=page.next_page_token
        )

    async def GetAuditEvent(
        self, request: pb.GetAuditEventRequest, context: Any
    ) -> pb.GetAuditEventResponse:
        event = await self._reader.get(_sequence_from_name(request.name))
        return pb.GetAuditEventResponse(event=event_message(event))

    async def StreamAuditEvents(
        self, request: pb.StreamAuditEventsRequest, context: Any
    ) -> AsyncIterator[pb.StreamAuditEventsResponse]:
        async for event in self._reader.stream(request.after_sequence):
            yield pb.StreamAuditEventsResponse(event=event_message(event))

    async def VerifyAuditChain(
        self, request: pb.VerifyAuditChainRequest, context: Any
    ) -> pb.VerifyAuditChainResponse:
        report = await self._reader.verify(request.start_sequence, request.end_sequence)
        return pb.VerifyAuditChainResponse(
            ok=report.ok,
            checked_count=report.checked_count,
            first_bad_sequence=report.first_bad_sequence,
            head_sequence=report.head_sequence,
            head_hash=report.head_hash.hex(),
        )

    async def GetAuditCheckpoint(
        self, request: pb.GetAuditCheckpointRequest, context: Any
    ) -> pb.GetAuditCheckpointResponse:
        checkpoint = await self._reader.checkpoint()
        return pb.GetAuditCheckpointResponse(
            sequence=checkpoint.sequence,
            head_hash=checkpoint.head_hash.hex(),
            signature=checkpoint.signature,
            key_id=checkpoint.key_id,
            create_time=Timestamp(seconds=checkpoint.created_at),
        )
