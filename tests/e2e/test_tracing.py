"""OpenTelemetry traces: the caller's W3C trace continues through the server span, the
handler and its database statements and provider HTTP calls; spans leave by OTLP only
when an endpoint is configured, and nothing is instrumented otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from structlog.testing import capture_logs

from keyhold.adapters.telemetry.tracing import tracing_for
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.e2e.test_providers import World
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.servers import PASSWORD, running_server, settings_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
CREATE_USER = "/keyhold.identity.v1.IdentityService/CreateUser"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider
    provider.shutdown()


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def engine_tracers(app: KeyholdServer) -> list[object]:
    listeners = app.platform.database.engine.sync_engine.dispatch.before_cursor_execute
    return [each for each in listeners if "EngineTracer" in getattr(each, "__qualname__", "")]


def descends_from(span: ReadableSpan, ancestor: ReadableSpan, every: list[ReadableSpan]) -> bool:
    by_id = {hex_ids(each)[1]: each for each in every}
    parent = parent_of(span)
    while parent is not None:
        if parent == hex_ids(ancestor)[1]:
            return True
        parent = parent_of(by_id[parent]) if parent in by_id else None
    return False


async def test_one_trace_from_the_callers_traceparent_to_the_database(
    tmp_path: Path, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    async with running_server(settings_for(tmp_path), tracer_provider=tracer_provider) as (
        app,
        channel,
    ):
        assert engine_tracers(app)
        spans.clear()  # start-up's own statements
        with capture_logs() as logs:
            await pb_grpc.IdentityServiceStub(channel).CreateUser(
                pb.CreateUserRequest(
                    email="ada@example.com", password=PASSWORD, display_name="Ada"
                ),
                metadata=(TRACEPARENT,),
            )
        async with app.platform.database.engine.connect() as db:
            audited = set(
                (await db.execute(text("SELECT trace_id FROM audit_events"))).scalars().all()
            )
            user_id = (await db.execute(text("SELECT id FROM users"))).scalar_one()

    finished = list(spans.get_finished_spans())
    server = next(s for s in finished if s.kind is SpanKind.SERVER)
    assert server.name == CREATE_USER
    assert hex_ids(server)[0] == TRACE_ID
    assert parent_of(server) == PARENT_SPAN_ID  # continues the caller's span
    handler = next(s for s in finished if s.name == "CreateUser")
    assert parent_of(handler) == hex_ids(server)[1]
    database = [s for s in finished if s.kind is SpanKind.CLIENT]
    inserts = [s for s in database if "INSERT" in s.name.upper()]
    assert inserts, [s.name for s in finished]
    assert any(descends_from(s, handler, finished) for s in inserts)
    in_trace = [s for s in finished if hex_ids(s)[0] == TRACE_ID]
    assert {server, handler, *inserts} <= set(in_trace)
    assert all(s is server or descends_from(s, server, finished) for s in in_trace)
    statements = " ".join(str(s.attributes) for s in database)
    assert PASSWORD not in statements  # statements are recorded without their parameters
    assert user_id not in statements

    completed = [line for line in logs if line["event"] == "rpc_completed"]
    assert [(line["trace_id"], line["span_id"]) for line in completed] == [hex_ids(server)]
    assert audited == {TRACE_ID}


async def test_provider_http_calls_are_spans_of_the_handler(
    tmp_path: Path, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    with FakeOAuthProvider() as provider:
        async with running_server(settings_for(tmp_path), tracer_provider=tracer_provider) as (
            app,
            channel,
        ):
            world = await World(app, channel).setup()
            await world.create_oauth_provider(provider)
            spans.clear()
            await world.connect(provider)
    finished = list(spans.get_finished_spans())
    handler = next(s for s in finished if s.name == "CompleteConnection")
    posts = [s for s in finished if s.kind is SpanKind.CLIENT and s.name.startswith("POST")]
    assert len(posts) == 1
    assert descends_from(posts[0], handler, finished)
    assert hex_ids(posts[0])[0] == hex_ids(handler)[0]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.span_names: list[str] = []

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.span_names += [span.name for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_are_exported_by_otlp_when_an_endpoint_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    port = otlp.add_insecure_port("127.0.0.1:0")
    await otlp.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    try:
        async with running_server(settings_for(tmp_path)) as (app, channel):
            assert app.platform.tracing is not None
            await pb_grpc.IdentityServiceStub(channel).CreateUser(
                pb.CreateUserRequest(email="ada@example.com", password=PASSWORD, display_name="Ada")
            )
        # stopping the server flushed its spans
        assert CREATE_USER in collector.span_names
        assert "CreateUser" in collector.span_names
    finally:
        await otlp.stop(0)


async def test_nothing_is_instrumented_without_an_endpoint_or_a_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing_for(None, {}) is None
    async with running_server(settings_for(tmp_path)) as (app, channel):
        assert app.platform.tracing is None
        assert not engine_tracers(app)
        assert not getattr(app.providers.oauth._http, "_is_instrumented_by_opentelemetry", False)
        with capture_logs() as logs:
            await pb_grpc.IdentityServiceStub(channel).CreateUser(
                pb.CreateUserRequest(
                    email="ada@example.com", password=PASSWORD, display_name="Ada"
                ),
                metadata=(TRACEPARENT,),
            )
    completed = [line for line in logs if line["event"] == "rpc_completed"]
    # Without tracing the log still carries the caller's trace context.
    assert [(line["trace_id"], line["span_id"]) for line in completed] == [
        (TRACE_ID, PARENT_SPAN_ID)
    ]
