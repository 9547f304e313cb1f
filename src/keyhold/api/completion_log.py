"""The one log line every call leaves when it completes, whichever transport carried
it: what was called, how it ended, how long it took, and who asked."""

from __future__ import annotations

from typing import Any

from keyhold.domain.call import CallContext


def log_completion(
    log: Any, method: str, code: str, seconds: float, call: CallContext, **more: object
) -> None:
    """`rpc_completed` through `log` (a structlog logger): keyword arguments only."""
    log.info(
        "rpc_completed",
        method=method,
        code=code,
        duration_ms=round(seconds * 1000.0, 3),
        peer=call.peer,
        principal=call.principal.subject or "anonymous",
        request_id=call.request_id,
        trace_id=call.trace_id,
        span_id=call.span_id,
        **more,
    )
