"""Reading the audit trail: list, get, stream, verify and sign checkpoints. Every read
is itself audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.pagination import decode_page_token, encode_page_token, page_of, page_size
from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.chain import GENESIS_HASH, verify_chain
from keyhold.domain.audit.events import AuditEvent, AuditFilter
from keyhold.domain.audit.ports import AuditFeed, AuditTrail, CheckpointSigner
from keyhold.domain.clock import Clock
from keyhold.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

_DOMAIN = "keyhold.audit"
VERIFY_CHUNK = 1_000
STREAM_CHUNK = 500
MAX_SEQUENCE = 2**63 - 1  # the BIGINT column's range
# Streams open at once in one process: each waits on the audit feed and holds a chunk of
# events. Past it a new stream is refused RESOURCE_EXHAUSTED until one ends.
MAX_AUDIT_STREAMS = 64


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked_count: int
    first_bad_sequence: int
    head_sequence: int
    head_hash: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sequence: int
    head_hash: bytes
    signature: str
    key_id: str
    created_at: int


def _filter_key(where: AuditFilter) -> dict[str, object]:
    return {
        "actor": where.actor_id,
        "action": where.action,
        "resource": where.resource_name,
        "outcome": where.outcome.value if where.outcome else "",
        "start": where.start_time.isoformat() if where.start_time else "",
        "end": where.end_time.isoformat() if where.end_time else "",
    }


async def verify_trail(trail: AuditTrail, start: int, end: int) -> ChainReport:
    """Recompute the chain over [start, end] (0: first retained / head)."""
    head = await trail.head()
    first = await trail.first_sequence()
    if head is None or first is None:
        return ChainReport(True, 0, 0, 0, b"")
    start = max(start or first, first)
    end = min(end or head.sequence, head.sequence)
    prev_hash: bytes | None
    if start == 1:
        prev_hash = GENESIS_HASH
    elif start == first:
        prev_hash = None  # records before it were pruned: trust its stored link
    else:
        previous = await trail.get(start - 1)
        prev_hash = previous.hash if previous else None
    checked, cursor = 0, start
    while cursor <= end:
        chunk = await trail.ascending(cursor, end, VERIFY_CHUNK)
        result = verify_chain(chunk, cursor, prev_hash)
        checked += result.checked_count
        if not result.ok or not chunk:
            bad = result.first_bad_sequence if not result.ok else cursor
            return ChainReport(False, checked, bad, head.sequence, head.hash)
        cursor, prev_hash = chunk[-1].sequence + 1, result.last_hash
    return ChainReport(True, checked, 0, head.sequence, head.hash)


class AuditTrailReader:
    def __init__(
        self,
        trail: AuditTrail,
        feed: AuditFeed,
        recorder: AuditRecorder,
        signer: CheckpointSigner,
        clock: Clock,
        *,
        issuer: str,
        stream_wake_seconds: float = 15.0,
        max_streams: int = MAX_AUDIT_STREAMS,
    ) -> None:
        self._trail = trail
        self._feed = feed
        self._recorder = recorder
        self._signer = signer
        self._clock = clock
        self._issuer = issuer
        self._stream_wake = stream_wake_seconds
        self._max_streams = max_streams
        self._streams = 0

    async def list(self, where: AuditFilter, size: int, token: str) -> AuditPage:
        limit = page_size(size)
        if where.start_time and where.end_time and where.start_time >= where.end_time:
            raise InvalidArgument(
                "TIME_RANGE_INVALID",
                "start_time must be before end_time",
                [FieldViolation("end_time", "must be after start_time")],
                domain=_DOMAIN,
            )
        query = _filter_key(where)
        cursor = decode_page_token(token, query)
        if cursor is not None and (type(cursor) is not int or not 1 <= cursor <= MAX_SEQUENCE):
            raise InvalidArgument("PAGE_TOKEN_INVALID", "page_token is malformed", domain=_DOMAIN)
        details = {k: str(v) for k, v in query.items() if v}
        async with self._recorder.attempt(Action.AUDIT_EVENTS_LIST, "audit-events", details) as at:
            events = await self._trail.newest_first(where, cursor, limit + 1)
            at.details["returned"] = str(min(len(events), limit))
        page, next_token = page_of(
            events, limit, lambda last: encode_page_token(last.sequence, query)
        )
        return AuditPage(page, next_token)

    async def get(self, sequence: int) -> AuditEvent:
        name = f"audit-events/{sequence}"
        async with self._recorder.attempt(Action.AUDIT_EVENT_GET, name):
            event = await self._trail.get(sequence)
            if event is None:
                raise NotFound("AUDIT_EVENT_NOT_FOUND", f"{name} does not exist", domain=_DOMAIN)
        return event

    async def verify(self, start: int, end: int) -> ChainReport:
        if start < 0 or end < 0 or (end and start > end):
            raise InvalidArgument(
                "SEQUENCE_RANGE_INVALID",
                "start_sequence and end_sequence must be ≥ 0 with start ≤ end",
                [FieldViolation("start_sequence", "must not exceed end_sequence")],
                domain=_DOMAIN,
            )
        details = {"start_sequence": str(start), "end_sequence": str(end)}
        async with self._recorder.attempt(Action.AUDIT_CHAIN_VERIFY, "audit-events", details) as at:
            report = await verify_trail(self._trail, start, end)
            at.details.update(ok=str(report.ok).lower(), checked=str(report.checked_count))
        return report

    async def checkpoint(self) -> Checkpoint:
        async with self._recorder.attempt(Action.AUDIT_CHECKPOINT_GET, "audit-events") as at:
            head = await self._trail.head()
            if head is None:
                raise FailedPrecondition(
                    "AUDIT_TRAIL_EMPTY", "there is no event to checkpoint", domain=_DOMAIN
                )
            now = self._clock.timestamp()
            signature, key_id = self._signer.sign(
                {"iss": self._issuer, "seq": head.sequence, "head": head.hash.hex(), "iat": now}
            )
            at.details.update(sequence=str(head.sequence), key_id=key_id)
        return Checkpoint(head.sequence, head.hash, signature, key_id, now)

    async def stream(self, after_sequence: int) -> AsyncIterator[AuditEvent]:
        """Events after `after_sequence`, oldest first, then live ones as they come."""
        if not 0 <= after_sequence < MAX_SEQUENCE:
            raise InvalidArgument(
                "SEQUENCE_INVALID",
                "after_sequence must be at least 0 and below the last possible sequence",
                [FieldViolation("after_sequence", f"must be ≥ 0 and < {MAX_SEQUENCE}")],
                domain=_DOMAIN,
            )
        details = {"after_sequence": str(after_sequence)}
        async with self._recorder.attempt(
            Action.AUDIT_EVENTS_STREAM, "audit-events", details, cancellation_succeeds=True
        ) as at:
            if self._streams >= self._max_streams:
                raise ResourceExhausted(
                    "AUDIT_STREAMS_EXHAUSTED",
                    f"this server has {self._max_streams} audit streams open; retry later",
                    retry_after_seconds=self._stream_wake,
                    domain=_DOMAIN,
                )
            self._streams += 1
            last, delivered = after_sequence, 0
            try:
                while True:
                    chunk = await self._trail.ascending(last + 1, MAX_SEQUENCE, STREAM_CHUNK)
                    for event in chunk:
                        yield event
                        last, delivered = event.sequence, delivered + 1
                    if len(chunk) < STREAM_CHUNK:
                        await self._feed.wait_beyond(last, self._stream_wake)
            finally:
                self._streams -= 1
                at.details.update(delivered=str(delivered), last_sequence=str(last))
