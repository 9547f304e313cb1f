"""OpenTelemetry tracing: a server span per RPC (W3C trace context from the incoming
metadata), a span per SQL statement and per provider HTTP call.

Tracing is on when a tracer provider is given (tests) or `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; then spans go to that OTLP/gRPC
endpoint. Otherwise nothing is instrumented and a call pays nothing for tracing.

Everything is instrumented per object (this server's interceptor, engine and HTTP
client) with the provider passed explicitly: neither the process-wide tracer provider nor
the libraries' global patching is touched, so servers in one process stay independent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx
from grpc import aio
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACER_NAME = "keyhold"


class Tracing:
    def __init__(self, provider: trace.TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        self._owned = owned  # built here from the environment: shut down with the server
        self.tracer = provider.get_tracer(TRACER_NAME)

    def server_interceptors(self) -> list[aio.ServerInterceptor]:
        return [aio_server_interceptor(tracer_provider=self.provider)]  # type: ignore[no-untyped-call]

    def instrument_engine(self, engine: AsyncEngine) -> None:
        # The per-engine half of SQLAlchemyInstrumentor, without its global patching.
        connections = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("unused")
        tracer = self.provider.get_tracer(__name__)
        EngineTracer(tracer, engine.sync_engine, connections)  # type: ignore[no-untyped-call]

    def instrument_http(self, client: httpx.AsyncClient) -> None:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self) -> None:
        if self._owned and isinstance(self.provider, SdkTracerProvider):
            self.provider.shutdown()  # flushes the spans not yet exported


def tracing_for(
    explicit: trace.TracerProvider | None, environ: Mapping[str, str] = os.environ
) -> Tracing | None:
    """Tracing with `explicit`, or exporting by OTLP where the environment names an
    endpoint, or None."""
    if explicit is not None:
        return Tracing(explicit, owned=False)
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME", "keyhold")})
    provider = SdkTracerProvider(resource=resource)
    exporter: Any = OTLPSpanExporter()  # endpoint, headers, TLS: from OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, owned=True)
