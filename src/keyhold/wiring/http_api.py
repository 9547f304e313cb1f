"""The HTTP surface: the OAuth 2.0 / OIDC endpoints, admitted by the gRPC surface's
pipeline under each endpoint's twin RPC, served beside gRPC in the same event loop."""

from __future__ import annotations

from starlette.applications import Starlette

from keyhold.api.http.calls import HttpAdmission
from keyhold.api.http.completion import CompletionRecording
from keyhold.api.http.endpoints import OAuthEndpoints
from keyhold.api.http.listener import HttpListener
from keyhold.api.policy import load_policies
from keyhold.wiring.grpc_api import SERVICES, GrpcApi, serves_tls
from keyhold.wiring.identity import Identity
from keyhold.wiring.platform import Platform


def wire_http_api(platform: Platform, identity: Identity, grpc_api: GrpcApi) -> HttpListener | None:
    """None when no HTTP address is configured."""
    settings = platform.settings
    if not settings.http_address:
        return None
    health = platform.health
    endpoints = OAuthEndpoints(
        identity,
        HttpAdmission(grpc_api.admission, load_policies(SERVICES)),
        issuer=settings.issuer,
        ready=lambda: health.serving,
    )
    tls = serves_tls(settings)
    return HttpListener(
        CompletionRecording(Starlette(routes=endpoints.routes()), grpc_api.rpc_metrics),
        settings.http_address,
        cert_file=settings.tls_cert_file if tls else None,
        key_file=settings.tls_key_file if tls else None,
        client_ca_file=settings.tls_client_ca_file if tls else None,
        grace_seconds=settings.shutdown_grace_seconds,
        shared_port=settings.workers > 1,
    )
