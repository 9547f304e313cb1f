"""Each HTTP request leaves the same trace as a gRPC call: one `rpc_completed` log line
through structlog (the twin's method, a gRPC-style code, the caller, the request id)
and, when metrics are on, the twin method's counters and latency. An ASGI middleware
around the endpoints; the call context the endpoint's admission set is read after it."""

from __future__ import annotations

from time import perf_counter

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhold.api.completion_log import log_completion
from keyhold.api.http.calls import arrival_of
from keyhold.api.interceptor import RpcMetrics, RpcObserver
from keyhold.domain.call import current_call, set_current_call

log = structlog.get_logger(__name__)

# How gRPC would name the outcome an HTTP status reports.
_CODES = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


class CompletionRecording:
    def __init__(self, app: ASGIApp, metrics: RpcMetrics | None = None) -> None:
        self._app = app
        self._metrics = metrics
        self._observers: dict[str, RpcObserver] = {}  # by twin method: a handful
        self._log = log.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = perf_counter()
        status = 500
        set_current_call(arrival_of(scope))  # admission, if any, completes it

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Echoed, as gRPC's trailer does.
                request_id = current_call().request_id.encode()
                headers = [*message.get("headers", []), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            self._completed(scope, status, perf_counter() - started)

    def _completed(self, scope: Scope, status: int, seconds: float) -> None:
        call = current_call()
        method = call.method or f"{scope['method']} {scope['path'][:128]}"
        code = _CODES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        if self._metrics is not None and call.method:
            observe = self._observers.get(call.method)
            if observe is None:
                observe = self._observers[call.method] = self._metrics.for_method(call.method)
            observe(code, seconds)
        log_completion(self._log, method, code, seconds, call, http_status=status)
