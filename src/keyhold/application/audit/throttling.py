"""Calls refused by a rate limit, in the audit trail without letting a flood flood it.

Within each window, the first refusal of each (method, key) is recorded as a DENIED
record with reason RATE_LIMITED, up to `records_per_window` records in all; every other
refusal in the window is only counted. When the window is over (seen at the next
refusal, or at `flush` on shutdown) one summary record per method states how many
refusals it did not record one by one. So the trail grows by at most
`records_per_window` plus one record per method per window, whatever the caller sends,
and memory holds at most `records_per_window` keys.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime

import structlog

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import CallContext
from keyhold.domain.clock import Clock
from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.principal import SYSTEM

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 60
RECORDS_PER_WINDOW = 100


def key_digest(key: str) -> str:
    """Rate-limit keys may be personal data (an email): the trail holds a digest."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ThrottledCalls:
    def __init__(
        self,
        recorder: AuditRecorder,
        clock: Clock,
        *,
        window_seconds: int = WINDOW_SECONDS,
        records_per_window: int = RECORDS_PER_WINDOW,
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._window_seconds = window_seconds
        self._records_per_window = records_per_window
        self._window = -1
        self._recorded: set[tuple[str, str]] = set()
        self._unrecorded: Counter[str] = Counter()  # by method; methods are few

    async def refused(self, call: CallContext, error: ResourceExhausted, key: str) -> None:
        """`call` was refused by the limit `error` describes, counted under `key`."""
        window = self._clock.timestamp() // self._window_seconds
        if window != self._window:
            ended = self._window
            counts = self._start(window)
            await self._summarize(counts, ended)
        seen = (call.method, key_digest(key))
        if seen in self._recorded or len(self._recorded) >= self._records_per_window:
            self._unrecorded[call.method] += 1
            return
        self._recorded.add(seen)
        details = {
            "method": call.method,
            "limit": error.metadata.get("limit", ""),
            "key_sha256": seen[1],
            "window_start": self._window_start(window),
        }
        await self._recorder.record_refusal(call, error, Action.RATE_LIMITED, call.method, details)

    async def flush(self) -> None:
        """Record the counts of the window under way (at shutdown)."""
        ended = self._window
        await self._summarize(self._start(ended), ended)

    def _start(self, window: int) -> Counter[str]:
        """Begin `window`; the counts of the one before it."""
        counts = self._unrecorded
        self._window, self._unrecorded, self._recorded = window, Counter(), set()
        return counts

    async def _summarize(self, counts: Counter[str], window: int) -> None:
        for method, count in sorted(counts.items()):
            details = {
                "method": method,
                "refusals_not_recorded_singly": str(count),
                "window_start": self._window_start(window),
                "window_seconds": str(self._window_seconds),
            }
            error = ResourceExhausted(
                "RATE_LIMITED", "calls refused by a rate limit", retry_after_seconds=0
            )
            summary = CallContext(principal=SYSTEM, method=method)
            await self._recorder.record_refusal(
                summary, error, Action.RATE_LIMITED, method, details
            )

    def _window_start(self, window: int) -> str:
        return datetime.fromtimestamp(window * self._window_seconds, UTC).isoformat()
