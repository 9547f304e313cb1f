"""The provider context: the provider catalog, users' connections to providers, and
the OAuth client that reaches providers only through the egress policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from keyhold.adapters.oauth.client import HttpOAuthClient
from keyhold.adapters.oauth.egress_transport import EgressTransport, Resolver, verifying_context
from keyhold.adapters.persistence.provider.refresh_lock import SqlRefreshLock
from keyhold.application.provider.catalog import ProviderCatalog
from keyhold.application.provider.connections import Connections
from keyhold.wiring.audit import Audit
from keyhold.wiring.platform import Platform


@dataclass(frozen=True, slots=True)
class Providers:
    """The use cases ProviderService serves, and the client they reach providers with."""

    catalog: ProviderCatalog
    connections: Connections
    oauth: HttpOAuthClient


def wire_providers(platform: Platform, audit: Audit, resolver: Resolver) -> Providers:
    """`resolver` resolves provider host names for the egress policy."""
    settings = platform.settings
    egress = settings.egress_policy
    tracing = platform.tracing
    oauth = HttpOAuthClient(
        timeout_seconds=settings.provider_timeout_seconds,
        retries=settings.provider_retries,
        breaker_threshold=settings.provider_breaker_threshold,
        breaker_cooldown_seconds=settings.provider_breaker_cooldown_seconds,
        instrument=None if tracing is None else tracing.instrument_http,
        egress=egress,
        transport=EgressTransport(
            egress, resolver=resolver, ssl_context=verifying_context(settings.egress_ca_file)
        ),
        max_response_bytes=settings.provider_max_response_bytes,
    )
    connections = Connections(
        platform.unit_of_work,
        oauth,
        platform.sealer,
        # At most half the pool waits on refresh locks: other calls keep the rest.
        SqlRefreshLock(platform.database, max_holders=settings.database_pool_size // 2),
        audit.recorder,
        platform.clock,
        refresh_margin=timedelta(seconds=settings.provider_refresh_margin_seconds),
        telemetry=platform.telemetry,
    )
    catalog = ProviderCatalog(
        platform.unit_of_work, platform.sealer, audit.recorder, platform.clock, egress
    )
    return Providers(catalog=catalog, connections=connections, oauth=oauth)
