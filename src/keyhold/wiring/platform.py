"""What every context stands on: the clock, the database and its health, telemetry,
and the signing keys that both access tokens and audit checkpoints are signed with."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.migrate import migrate
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWorkFactory
from keyhold.adapters.telemetry.prometheus import PrometheusTelemetry
from keyhold.adapters.telemetry.tracing import Tracing, tracing_for
from keyhold.api.health import DatabaseMonitor, HealthReporter
from keyhold.application.identity.signing_keys import SigningKeys
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.clock import Clock
from keyhold.settings import Settings


@dataclass(frozen=True, slots=True)
class Platform:
    settings: Settings
    clock: Clock
    database: Database
    encryption_keys: AeadKeyRing  # what is sealed at rest is sealed under these
    sealer: AeadSealer
    unit_of_work: SqlUnitOfWorkFactory
    health: HealthReporter
    monitor: DatabaseMonitor
    telemetry: Telemetry
    registry: CollectorRegistry | None  # None: no metrics endpoint
    tracing: Tracing | None  # None: nothing is instrumented
    signing_keys: SigningKeys
    key_ring: KeyRing


def encryption_keys(settings: Settings) -> AeadKeyRing:
    if settings.key_encryption_keys is not None:
        return AeadKeyRing.parse(settings.key_encryption_keys.get_secret_value())
    return AeadKeyRing.load_or_create(settings.resolved_key_dir)


def database_engine(settings: Settings) -> AsyncEngine:
    return create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
        private_data_dir=settings.data_dir if settings.uses_data_dir else None,
    )


def signing_keys_for(
    settings: Settings, unit_of_work: SqlUnitOfWorkFactory, clock: Clock
) -> SigningKeys:
    """A retired key is published for as long as a token it signed may still verify
    (lifetime + leeway)."""
    return SigningKeys(
        unit_of_work,
        Es256KeyGenerator(),
        clock,
        publish_window=timedelta(
            seconds=settings.access_token_lifetime_seconds + settings.token_leeway_seconds
        ),
    )


async def wire_platform(
    settings: Settings,
    clock: Clock,
    service_names: list[str],
    tracer_provider: TracerProvider | None,
) -> Platform:
    """Migrates the database first when the settings ask for it."""
    tracing = tracing_for(tracer_provider)
    registry = CollectorRegistry() if settings.metrics_address else None
    health = HealthReporter(service_names)
    engine = database_engine(settings)
    suspected = asyncio.Event()  # set by any query that finds the database unreachable
    database = Database(engine, on_unavailable=suspected.set)
    monitor = DatabaseMonitor(
        database.ping, health, settings.health_check_interval_seconds, suspected
    )
    if tracing is not None:
        tracing.instrument_engine(engine)
    if settings.should_migrate_on_start:
        await migrate(engine)
    keys = encryption_keys(settings)
    sealer = AeadSealer(keys)
    unit_of_work = SqlUnitOfWorkFactory(database, sealer)
    signing_keys = signing_keys_for(settings, unit_of_work, clock)
    return Platform(
        settings=settings,
        clock=clock,
        database=database,
        encryption_keys=keys,
        sealer=sealer,
        unit_of_work=unit_of_work,
        health=health,
        monitor=monitor,
        telemetry=NO_TELEMETRY if registry is None else PrometheusTelemetry(registry),
        registry=registry,
        tracing=tracing,
        signing_keys=signing_keys,
        key_ring=KeyRing(signing_keys.verifiable),
    )
