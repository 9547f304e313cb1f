"""The gRPC surface: the policy pipeline every call passes, the four Keyhold services,
health and reflection, and the metrics endpoint beside them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from keyhold.adapters.ratelimit.storage import create_rate_limiter
from keyhold.adapters.telemetry.metrics_endpoint import MetricsEndpoint
from keyhold.adapters.telemetry.prometheus import RpcMetrics, ScrapedFigures
from keyhold.api.connection_limits import ConnectionLimits
from keyhold.api.interceptor import PolicyInterceptor
from keyhold.api.pipeline.admission import Admission
from keyhold.api.pipeline.authentication import Authenticator
from keyhold.api.pipeline.authorization import Authorizer
from keyhold.api.pipeline.rate_limit import RateLimitGate
from keyhold.api.policy import load_policies
from keyhold.api.reflection import enable_reflection
from keyhold.api.registration import GenericHandlersOnly, register_service
from keyhold.api.servicers.api_resources import ApiResourceServicer
from keyhold.api.servicers.audit import AuditServicer
from keyhold.api.servicers.identity import IdentityServicer
from keyhold.api.servicers.provider import ProviderServicer
from keyhold.audit.v1 import audit_service_pb2
from keyhold.identity.v1 import api_resource_service_pb2, identity_service_pb2
from keyhold.provider.v1 import provider_service_pb2
from keyhold.settings import Settings
from keyhold.wiring.audit import Audit
from keyhold.wiring.identity import Identity
from keyhold.wiring.platform import Platform
from keyhold.wiring.provider import Providers

SERVICES: tuple[ServiceDescriptor, ...] = (
    identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"],
    api_resource_service_pb2.DESCRIPTOR.services_by_name["ApiResourceService"],
)
SERVICE_NAMES = [service.full_name for service in SERVICES]


@dataclass(frozen=True, slots=True)
class GrpcApi:
    server: aio.Server
    interceptor: PolicyInterceptor  # drained at shutdown: handlers finish their audit
    admission: Admission  # what every call passes, whatever transport carries it
    rate_limit_gate: RateLimitGate
    rpc_metrics: RpcMetrics | None  # calls by method and code; the HTTP twins count here too
    metrics: MetricsEndpoint | None  # None: no metrics address configured


def serves_tls(settings: Settings) -> bool:
    """Whether the server listens with TLS (else on a plaintext port only)."""
    return settings.tls_cert_file is not None and settings.tls_key_file is not None


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        idle_seconds=settings.connection_idle_seconds,
        max_age_seconds=settings.connection_max_age_seconds,
        max_age_grace_seconds=settings.connection_max_age_grace_seconds,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
        max_concurrent_streams=settings.max_concurrent_streams,
        max_connections=settings.max_connections,
    )


def grpc_server(settings: Settings, platform: Platform) -> aio.Server:
    tracing = platform.tracing
    return aio.server(
        # Tracing's span per call is a grpc.aio interceptor; without tracing there is none.
        interceptors=None if tracing is None else tracing.server_interceptors(),
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            # Equal soft and hard limits: between them gRPC rejects at random.
            ("grpc.max_metadata_size", settings.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
            # One process: a port already in use is an error, not a silent share with
            # its holder. Several workers share the port on purpose.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            *connection_limits(settings).grpc_options(),
        ],
    )


def wire_grpc_api(
    platform: Platform, audit: Audit, identity: Identity, providers: Providers
) -> GrpcApi:
    settings = platform.settings
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    rate_limit_gate = RateLimitGate(
        create_rate_limiter(redis_url, settings.rate_limit_memory_entries),
        enabled=settings.rate_limits_enabled,
        on_refused=audit.throttled_calls.refused,
    )
    authorizer = Authorizer(
        {"sessions": identity.sessions.owner_of, "connections": providers.connections.owner_of}
    )
    registry = platform.registry
    rpc_metrics = None if registry is None else RpcMetrics(registry)
    admission = Admission(
        Authenticator(identity.access_tokens),
        authorizer,
        rate_limit_gate,
        on_denied=audit.recorder.record_denial,
    )
    interceptor = PolicyInterceptor(
        load_policies(SERVICES),
        admission,
        metrics=rpc_metrics,
        tracer=None if platform.tracing is None else platform.tracing.tracer,
        plaintext_only=not serves_tls(settings),
    )
    metrics = None
    if registry is not None and settings.metrics_address:
        registry.register(ScrapedFigures(rate_limit_gate, providers.oauth))
        metrics = MetricsEndpoint(settings.metrics_address, registry)
    server = grpc_server(settings, platform)
    servicers = (
        IdentityServicer(identity),
        AuditServicer(audit.reader),
        ProviderServicer(providers),
        ApiResourceServicer(
            identity.api_resources, identity.account_keys, identity.trusted_issuers
        ),
    )
    for service, servicer in zip(SERVICES, servicers, strict=True):
        register_service(server, service, servicer, interceptor)
    # The generated function calls nothing but the two add_* methods it provides.
    health_only_generic = cast(aio.Server, GenericHandlersOnly(server))
    health_pb2_grpc.add_HealthServicer_to_server(platform.health.servicer, health_only_generic)
    enable_reflection(server, SERVICE_NAMES)
    return GrpcApi(
        server=server,
        interceptor=interceptor,
        admission=admission,
        rate_limit_gate=rate_limit_gate,
        rpc_metrics=rpc_metrics,
        metrics=metrics,
    )
