"""The policy interceptor: every Keyhold method passes request id → authentication →
request bounds → authorization → rate limiting before its handler, and every failure
leaves as a rich status. Each call is logged once when it completes (and counted, when
metrics are on).

It is applied once, when the methods are registered (see `registration`), rather than
as a grpc.aio ServerInterceptor: that saves gRPC's per-call interceptor chain, and a
call costs no lookup here at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc
import structlog
from grpc import aio
from opentelemetry import trace

from keyhold.api import errors as status_mapping
from keyhold.api.completion_log import log_completion
from keyhold.api.pipeline.admission import Admission
from keyhold.api.pipeline.authentication import authorization_of, transport_identity
from keyhold.api.pipeline.request_id import request_id_from, trace_context_from
from keyhold.api.policy import MethodPolicy, PolicyError
from keyhold.domain.call import PLAINTEXT, CallContext, current_call
from keyhold.domain.errors import DomainError

log = structlog.get_logger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


RpcObserver = Callable[[str, float], None]  # (status code name, seconds), once per call


class RpcMetrics(Protocol):
    def for_method(self, method: str) -> RpcObserver: ...


def _status_name(error: BaseException, context: aio.ServicerContext[Any, Any]) -> str:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"  # the client went away (GeneratorExit: from a stream)
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _text_or_none(value: str | bytes | None) -> str | None:
    """A text metadata value; binary ones (`-bin` keys) are not what these keys carry."""
    return value if isinstance(value, str) else None


def _span_ids(traceparent: str | None) -> tuple[str, str]:
    """The server span's ids (it continues the caller's trace, or starts one)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return trace_context_from(traceparent)
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class PolicyInterceptor:
    def __init__(
        self,
        policies: dict[str, MethodPolicy],
        admission: Admission,
        *,
        metrics: RpcMetrics | None = None,
        tracer: trace.Tracer | None = None,
        plaintext_only: bool = False,
    ) -> None:
        self._policies = policies
        self._admission = admission
        self._metrics = metrics
        self._tracer = tracer
        self._trace_ids = trace_context_from if tracer is None else _span_ids
        self._log = log.bind()  # structlog's advice for a hot path: no lazy proxy per call
        # A server without TLS has one transport identity for every call: gRPC's
        # auth context is not asked for it each time.
        self._plaintext = PLAINTEXT if plaintext_only else None
        self._running = 0  # handlers between admission and their last line
        self._idle: asyncio.Event | None = None  # set when they are all done, once asked

    def _finished(self) -> None:
        self._running -= 1
        if not self._running and self._idle is not None:
            self._idle.set()

    async def drain(self, within_seconds: float) -> None:
        """Wait, up to `within_seconds`, for the handlers still running. gRPC's stop
        returns once the calls are over on the wire, but a call cancelled at the end of
        the grace period still has its audit outcome to write: the database must
        outlive it."""
        if not self._running:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), within_seconds)

    def wrap(self, full_method: str, handler: Handler) -> Handler:
        """`handler` with the policy pipeline in front of it."""
        policy = self._policies.get(full_method)
        if policy is None:
            raise PolicyError(f"{full_method} has no policy; it cannot be served")
        return self._wrap(handler, policy)

    def _wrap(self, handler: Any, policy: MethodPolicy) -> Handler:
        method = policy.full_method
        observe = None if self._metrics is None else self._metrics.for_method(method)
        completed = self._completed
        admit = self._admitter(policy)
        if handler.unary_unary is not None:
            behavior = self._traced(handler.unary_unary, method)
            is_async = inspect.iscoroutinefunction(behavior)  # decided once, not per call

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                started = perf_counter()
                code = "OK"
                self._running += 1
                try:
                    call = await admit(request, context)
                    try:
                        if is_async:
                            return await behavior(request, context)
                        return behavior(request, context)
                    except Exception as exc:
                        await self._fail(exc, call, context)
                except BaseException as error:
                    code = _status_name(error, context)
                    raise
                finally:
                    self._finished()
                    completed(method, code, started, observe)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream_behavior = self._traced_stream(handler.unary_stream, method)

            async def stream(
                request: Any, context: aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                started = perf_counter()
                code = "OK"
                self._running += 1
                try:
                    call = await admit(request, context)
                    try:
                        async for response in stream_behavior(request, context):
                            yield response
                    except Exception as exc:
                        await self._fail(exc, call, context)
                except BaseException as error:
                    code = _status_name(error, context)
                    raise
                finally:
                    self._finished()
                    completed(method, code, started, observe)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{policy.full_method}: client-streaming methods are not supported")

    def _completed(
        self, method: str, code: str, started: float, observe: RpcObserver | None
    ) -> None:
        """The call's one log line (and its metrics): keyword arguments only, nothing bound."""
        seconds = perf_counter() - started
        if observe is not None:
            observe(code, seconds)
        log_completion(self._log, method, code, seconds, current_call())

    def _traced(self, behavior: Any, method: str) -> Any:
        """With tracing, the handler in a span of its own under the server span."""
        tracer = self._tracer
        if tracer is None:
            return behavior
        name = method.rpartition("/")[2]
        is_async = inspect.iscoroutinefunction(behavior)

        async def traced(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            with tracer.start_as_current_span(name, attributes={"rpc.method": name}):
                if is_async:
                    return await behavior(request, context)
                return behavior(request, context)

        return traced

    def _traced_stream(self, behavior: Any, method: str) -> Any:
        tracer = self._tracer
        if tracer is None:
            return behavior
        name = method.rpartition("/")[2]

        async def traced(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with tracer.start_as_current_span(name, attributes={"rpc.method": name}):
                async for response in behavior(request, context):
                    yield response

        return traced

    def _admitter(
        self, policy: MethodPolicy
    ) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[CallContext]]:
        """The admission of one method's calls: what the call says about itself, read
        from gRPC, through the pipeline (`pipeline/admission.py`)."""
        admission = self._admission.for_method(policy)
        trace_ids, plaintext = self._trace_ids, self._plaintext

        async def admit(request: Any, context: aio.ServicerContext[Any, Any]) -> CallContext:
            entries = context.invocation_metadata() or ()
            metadata = dict(entries)
            rid = request_id_from(_text_or_none(metadata.get("x-request-id")))
            # Echoed with the status: no extra send operation per call.
            context.set_trailing_metadata((("x-request-id", rid),))
            trace_id, span_id = trace_ids(_text_or_none(metadata.get("traceparent")))
            try:
                return await admission.admit(
                    request,
                    authorization_of(metadata, entries),
                    context.peer(),
                    (_text_or_none(metadata.get("user-agent")) or "")[:256],
                    rid,
                    trace_id,
                    span_id,
                    plaintext or transport_identity(context.auth_context()),
                )
            except Exception as exc:  # a refusal; else a bug: INTERNAL with the request id
                await self._fail(exc, current_call(), context)

        return admit

    async def _fail(
        self, exc: Exception, call: CallContext, context: aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        if isinstance(exc, aio.AbortError):
            raise exc
        if isinstance(exc, DomainError):
            await self._abort_with(exc, call, context)
        if isinstance(exc, NotImplementedError):
            await self._abort_status(
                status_mapping.unimplemented_status(call.method), [], call, context
            )
        log.exception("unhandled_error", method=call.method, request_id=call.request_id)
        await self._abort_status(status_mapping.internal_status(call.request_id), [], call, context)

    async def _abort_with(
        self, error: DomainError, call: CallContext, context: aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        status, extra = status_mapping.status_for(error)
        await self._abort_status(status, extra, call, context)

    @staticmethod
    async def _abort_status(
        status: Any,
        extra: list[tuple[str, str]],
        call: CallContext,
        context: aio.ServicerContext[Any, Any],
    ) -> NoReturn:
        code = status_mapping.grpc_code(status.code)
        await context.abort(
            code, status.message, status_mapping.trailing_metadata(status, extra, call.request_id)
        )
