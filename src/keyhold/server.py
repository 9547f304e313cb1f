"""The composition root: builds every adapter, handler and servicer, and runs the server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.argon2_hasher import Argon2Hasher, Argon2Parameters
from keyhold.adapters.crypto.checkpoints import JwsCheckpointSigner
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.adapters.data import common_passwords
from keyhold.adapters.notices.log import LoggedAccountNotices
from keyhold.adapters.oauth.client import HttpOAuthClient
from keyhold.adapters.oauth.egress_transport import EgressTransport, Resolver, system_resolver
from keyhold.adapters.persistence.audit_feed import LocalAuditFeed
from keyhold.adapters.persistence.audit_trail import SqlAuditTrail
from keyhold.adapters.persistence.audit_writer import BatchingAuditAppender
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.migrate import migrate
from keyhold.adapters.persistence.notifications import (
    AUDIT_CHANNEL,
    REVOCATION_CHANNEL,
    PostgresListener,
    PostgresRevocationNotices,
    parse_revocation,
)
from keyhold.adapters.persistence.refresh_lock import SqlRefreshLock
from keyhold.adapters.persistence.refresh_rotation import SqlRefreshTokenRotator
from keyhold.adapters.persistence.service_accounts import SqlServiceAccountLookup
from keyhold.adapters.persistence.session_state import SqlSessionState
from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWork, unit_of_work_factory
from keyhold.adapters.persistence.vault_rotation import reseal_all
from keyhold.adapters.ratelimit.storage import create_rate_limiter
from keyhold.adapters.telemetry.metrics_endpoint import MetricsEndpoint
from keyhold.adapters.telemetry.prometheus import PrometheusTelemetry, RpcMetrics, ScrapedFigures
from keyhold.adapters.telemetry.tracing import Tracing, tracing_for
from keyhold.api.connection_limits import ConnectionLimits
from keyhold.api.health import DatabaseMonitor, HealthReporter
from keyhold.api.interceptor import PolicyInterceptor
from keyhold.api.pipeline.authentication import Authenticator
from keyhold.api.pipeline.authorization import Authorizer
from keyhold.api.pipeline.rate_limit import RateLimitGate
from keyhold.api.policy import load_policies
from keyhold.api.reflection import enable_reflection
from keyhold.api.registration import GenericHandlersOnly, register_service
from keyhold.api.servicers.audit import AuditServicer
from keyhold.api.servicers.identity import IdentityServicer, IdentityUseCases
from keyhold.api.servicers.provider import ProviderServicer, ProviderUseCases
from keyhold.api.tls import (
    CertificateFiles,
    ReloadingCertificates,
    TlsConfigurationError,
    is_loopback,
)
from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.audit.throttling import ThrottledCalls
from keyhold.application.audit.trail import AuditTrailReader
from keyhold.application.identity.introspection import TokenIntrospection
from keyhold.application.identity.lockout import LoginLockout
from keyhold.application.identity.passwords import Passwords
from keyhold.application.identity.revocations import NO_REPLICAS, SIGNING_KEY, Revocations
from keyhold.application.identity.service_accounts import ServiceAccounts
from keyhold.application.identity.sessions import SessionLifetimes, Sessions
from keyhold.application.identity.signing_keys import SigningKeyRotation, SigningKeys
from keyhold.application.identity.users import Users
from keyhold.application.identity.verification import EmailVerification
from keyhold.application.provider.catalog import ProviderCatalog
from keyhold.application.provider.connections import Connections
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.application.vault import VaultRotation
from keyhold.audit.v1 import audit_service_pb2
from keyhold.domain.clock import Clock, SystemClock
from keyhold.domain.errors import Unavailable
from keyhold.domain.identity.lockout import LockoutPolicy
from keyhold.domain.identity.passwords import PasswordPolicy
from keyhold.domain.identity.sessions import RetryGrace
from keyhold.domain.principal import Principal
from keyhold.event_loop import running_loop_name
from keyhold.grpc_transport import experiments_in_effect
from keyhold.identity.v1 import identity_service_pb2
from keyhold.log_output import flush_lines
from keyhold.provider.v1 import provider_service_pb2
from keyhold.settings import Settings

log = structlog.get_logger(__name__)
KEY_RING_REFRESH_SECONDS = 60.0
LOGIN_FAILURES_SWEEP_SECONDS = 600.0
# After the grace period: how long cancelled handlers get to write their audit outcomes.
HANDLER_CLEANUP_SECONDS = 5.0

SERVICES: tuple[ServiceDescriptor, ...] = (
    identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"],
)


def encryption_keys(settings: Settings) -> AeadKeyRing:
    if settings.key_encryption_keys is not None:
        return AeadKeyRing.parse(settings.key_encryption_keys.get_secret_value())
    return AeadKeyRing.load_or_create(settings.resolved_key_dir)


@dataclass
class KeyholdServer:
    """A built server; `start()` binds and serves, `stop()` drains and closes."""

    settings: Settings
    server: aio.Server
    database: Database
    unit_of_work: Callable[[], SqlUnitOfWork]
    health: HealthReporter
    monitor: DatabaseMonitor
    key_ring: KeyRing
    access_tokens: AccessTokens
    signing_keys: SigningKeys
    authorizer: Authorizer
    rate_limit_gate: RateLimitGate
    throttled_calls: ThrottledCalls
    audit_trail: SqlAuditTrail
    audit_recorder: AuditRecorder
    audit_reader: AuditTrailReader
    listener: PostgresListener | None  # audit appends, revocations, key rotations
    identity: IdentityUseCases
    providers: ProviderUseCases
    oauth: HttpOAuthClient
    hasher: Argon2Hasher
    interceptor: PolicyInterceptor
    vault: VaultRotation
    lockout: LoginLockout
    metrics: MetricsEndpoint | None = None
    tracing: Tracing | None = None
    port: int = 0
    certificates: ReloadingCertificates | None = None
    metrics_port: int = 0
    _key_refresher: asyncio.Task[None] | None = None
    _login_failures_sweeper: asyncio.Task[None] | None = None
    _reloads: set[asyncio.Task[bool]] = field(default_factory=set)

    async def start(self) -> int:
        """Bind and serve. Raises TlsConfigurationError for unusable TLS files, or for
        plaintext on a non-loopback address without `allow_plaintext`."""
        self.certificates = await asyncio.to_thread(_certificates, self.settings)
        self.key_ring.replace(await self.signing_keys.ensure_signer())
        address = self.settings.listen_address
        if self.certificates is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.certificates.credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        if self.metrics is not None:
            self.metrics_port = self.metrics.start()
        await self.server.start()
        await self.monitor.check_now()
        self.monitor.start()
        if self.listener is not None:
            self.listener.start()
        self._key_refresher = asyncio.create_task(self._refresh_keys(), name="keyhold-keys")
        self._login_failures_sweeper = asyncio.create_task(
            self._sweep_login_failures(), name="keyhold-login-failures"
        )
        log.info(
            "serving",
            address=address,
            port=self.port,
            metrics_port=self.metrics_port or None,
            tracing=self.tracing is not None,
            event_loop=running_loop_name(),
            grpc_experiments=experiments_in_effect(),
            **self._transport_fields(),
        )
        return self.port

    def _transport_fields(self) -> dict[str, object]:
        if self.certificates is None:
            return {"tls": False}
        current = self.certificates.current
        return {
            "tls": True,
            "client_certificates": self.certificates.requires_client_certificate,
            "certificate_serial": hex(current.serial_number),
            "certificate_not_after": current.not_after.isoformat(),
        }

    def reload_certificates(self) -> asyncio.Task[bool] | None:
        """SIGHUP: reread the TLS files off the event loop; new connections get them."""
        if self.certificates is None:
            log.info("tls_reload_skipped", reason="TLS is not configured")
            return None
        task = asyncio.create_task(asyncio.to_thread(self.certificates.reload))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return task

    async def _refresh_keys(self) -> None:
        """A backstop for missed rotation notices: reread the key ring every minute."""
        await _every(KEY_RING_REFRESH_SECONDS, self.key_ring.reload, "key_ring_refresh_failed")

    async def _sweep_login_failures(self) -> None:
        """Drop lockout counts quiet for longer than the lockout remembers them."""
        await _every(
            LOGIN_FAILURES_SWEEP_SECONDS, self.lockout.forget_stale, "login_failures_sweep_failed"
        )

    async def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get `grace`."""
        await self.health.shutdown()
        await self.monitor.stop()
        for task in (self._key_refresher, self._login_failures_sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.server.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        await self.interceptor.drain(HANDLER_CLEANUP_SECONDS)
        await self.throttled_calls.flush()
        if self.listener is not None:
            await self.listener.stop()
        await self.database.dispose()
        await self.oauth.close()
        self.hasher.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        flush_lines()  # the last calls' lines, before the process may end
        log.info("stopped")


async def _every(seconds: float, work: Callable[[], Awaitable[object]], failed: str) -> None:
    """`work` every `seconds` until cancelled; a database outage is logged as `failed`."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Unavailable:
            log.warning(failed)


def serves_tls(settings: Settings) -> bool:
    """Whether the server listens with TLS (else on a plaintext port only)."""
    return settings.tls_cert_file is not None and settings.tls_key_file is not None


def _certificates(settings: Settings) -> ReloadingCertificates | None:
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None or key is None:  # not serves_tls(settings)
        check_plaintext_allowed(settings)
        return None
    return ReloadingCertificates(CertificateFiles(cert, key, settings.tls_client_ca_file))


def signing_keys_for(
    settings: Settings, unit_of_work: Callable[[], SqlUnitOfWork], clock: Clock
) -> SigningKeys:
    """The key ring's store: a retired key is published for as long as a token it
    signed may still verify (lifetime + leeway)."""
    return SigningKeys(
        unit_of_work,
        Es256KeyGenerator(),
        clock,
        publish_window=timedelta(
            seconds=settings.access_token_lifetime_seconds + settings.token_leeway_seconds
        ),
    )


def check_transport(settings: Settings) -> None:
    """Raise TlsConfigurationError now if `start()` would (for a supervisor, before it
    forks workers that would each fail)."""
    _certificates(settings)


def check_plaintext_allowed(settings: Settings) -> None:
    """Without TLS, serve only on loopback unless `allow_plaintext` says otherwise."""
    if settings.tls_cert_file is not None or settings.allow_plaintext:
        return
    if is_loopback(settings.listen_address):
        return
    raise TlsConfigurationError(
        f"refusing to serve plaintext on {settings.listen_address}: set KEYHOLD_TLS_CERT_FILE "
        "and KEYHOLD_TLS_KEY_FILE, listen on a loopback address, or set "
        "KEYHOLD_ALLOW_PLAINTEXT=true if something in front of Keyhold encrypts the traffic"
    )


async def build_server(
    settings: Settings,
    clock: Clock | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    provider_resolver: Resolver = system_resolver,
) -> KeyholdServer:
    """`tracer_provider`: trace with it (tests); otherwise traces are exported only when
    `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing is instrumented when it is not.
    `provider_resolver`: resolves provider host names (tests: names without DNS)."""
    clock = clock or SystemClock()
    tracing = tracing_for(tracer_provider)
    registry = CollectorRegistry() if settings.metrics_address else None
    telemetry: Telemetry = NO_TELEMETRY if registry is None else PrometheusTelemetry(registry)
    policies = load_policies(SERVICES)
    health = HealthReporter([service.full_name for service in SERVICES])
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
        private_data_dir=settings.data_dir if settings.uses_data_dir else None,
    )
    keys = encryption_keys(settings)
    database = Database(engine, keys)
    if tracing is not None:
        tracing.instrument_engine(database.engine)
    sealer = AeadSealer(keys)
    unit_of_work = unit_of_work_factory(database, sealer)
    if settings.should_migrate_on_start:
        await migrate(database.engine)
    monitor = DatabaseMonitor(database.ping, health, settings.health_check_interval_seconds)
    database.on_unavailable = monitor.suspect
    signing_keys = signing_keys_for(settings, unit_of_work, clock)
    key_ring = KeyRing(signing_keys.verifiable)
    access_tokens = AccessTokens(
        key_ring,
        issuer=settings.issuer,
        audience=settings.audience,
        lifetime_seconds=settings.access_token_lifetime_seconds,
        leeway_seconds=settings.token_leeway_seconds,
        clock=clock,
    )
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    audit_trail = SqlAuditTrail(database)
    audit_feed = LocalAuditFeed()
    audit_recorder = AuditRecorder(
        BatchingAuditAppender(audit_trail, audit_feed.published), clock, telemetry
    )
    throttled_calls = ThrottledCalls(audit_recorder, clock)
    rate_limit_gate = RateLimitGate(
        create_rate_limiter(redis_url, settings.rate_limit_memory_entries),
        enabled=settings.rate_limits_enabled,
        on_refused=throttled_calls.refused,
    )
    audit_reader = AuditTrailReader(
        audit_trail,
        audit_feed,
        audit_recorder,
        JwsCheckpointSigner(key_ring),
        clock,
        issuer=settings.issuer,
    )
    listener = None
    hasher = Argon2Hasher(
        Argon2Parameters(
            settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism
        ),
        workers=settings.password_hash_workers,
    )
    session_state = SqlSessionState(database, clock.now)
    account_lookup = SqlServiceAccountLookup(database)

    async def session_is_live(principal: Principal) -> bool:
        user_id = principal.subject.removeprefix("users/")
        return await session_state.is_live(principal.session_id or "", user_id)

    async def account_is_live(principal: Principal) -> bool:
        return await account_lookup.exists(principal.subject.removeprefix("service-accounts/"))

    revocations = Revocations(
        session_is_live,
        account_is_live,
        PostgresRevocationNotices(database) if database.is_postgres else NO_REPLICAS,
        ttl_seconds=settings.session_cache_seconds,
    )
    access_tokens.set_principal_check(revocations.check, revocations.known_live)
    password_policy = PasswordPolicy(common_passwords())
    lockout = LoginLockout(
        SqlLoginFailureStore(database),
        LockoutPolicy(
            threshold=settings.lockout_threshold,
            peer_threshold=settings.lockout_peer_threshold,
            account_threshold=settings.lockout_account_threshold,
            account_interval=timedelta(seconds=settings.lockout_account_interval_seconds),
            base_cooldown=timedelta(seconds=settings.lockout_base_seconds),
            max_cooldown=timedelta(seconds=settings.lockout_max_seconds),
        ),
        clock,
        telemetry,
    )
    sessions = Sessions(
        unit_of_work,
        hasher,
        access_tokens,
        lockout,
        audit_recorder,
        revocations,
        clock,
        SessionLifetimes(
            absolute=timedelta(seconds=settings.refresh_token_lifetime_seconds),
            idle=timedelta(seconds=settings.session_idle_timeout_seconds),
        ),
        SqlRefreshTokenRotator(
            database,
            RetryGrace(
                timedelta(seconds=settings.refresh_reuse_grace_seconds),
                settings.refresh_reuse_grace_retries,
            ),
        ),
        telemetry,
    )
    identity = IdentityUseCases(
        users=Users(
            unit_of_work,
            hasher,
            password_policy,
            audit_recorder,
            revocations,
            clock,
            LoggedAccountNotices(),
            self_sign_up=settings.self_signup,
        ),
        sessions=sessions,
        passwords=Passwords(
            unit_of_work,
            hasher,
            password_policy,
            audit_recorder,
            revocations,
            clock,
            timedelta(seconds=settings.password_reset_token_lifetime_seconds),
            lockout,
        ),
        verification=EmailVerification(
            unit_of_work,
            audit_recorder,
            clock,
            timedelta(seconds=settings.email_verification_token_lifetime_seconds),
        ),
        signing_keys=signing_keys,
        rotation=SigningKeyRotation(
            signing_keys, audit_recorder, key_ring.reload, revocations.notices
        ),
        key_ring=key_ring,
        service_accounts=ServiceAccounts(
            unit_of_work,
            account_lookup,
            access_tokens,
            audit_recorder,
            revocations,
            clock,
            telemetry,
        ),
        introspection=TokenIntrospection(access_tokens, audit_recorder),
    )
    background: set[asyncio.Task[None]] = set()  # strong references until done
    if database.is_postgres:

        def revocation_announced(payload: str) -> None:
            kind, ids = parse_revocation(payload)
            if kind == SIGNING_KEY:
                task = asyncio.create_task(key_ring.reload())
                background.add(task)
                task.add_done_callback(background.discard)
            else:
                revocations.apply(kind, ids)

        listener = PostgresListener(
            settings.resolved_database_url,
            {AUDIT_CHANNEL: audit_feed.announced, REVOCATION_CHANNEL: revocation_announced},
        )
    egress = settings.egress_policy
    oauth = HttpOAuthClient(
        timeout_seconds=settings.provider_timeout_seconds,
        retries=settings.provider_retries,
        breaker_threshold=settings.provider_breaker_threshold,
        breaker_cooldown_seconds=settings.provider_breaker_cooldown_seconds,
        instrument=None if tracing is None else tracing.instrument_http,
        egress=egress,
        transport=EgressTransport(egress, resolver=provider_resolver),
        max_response_bytes=settings.provider_max_response_bytes,
    )
    connections = Connections(
        unit_of_work,
        oauth,
        sealer,
        SqlRefreshLock(database, max_holders=settings.database_pool_size // 2),
        audit_recorder,
        clock,
        refresh_margin=timedelta(seconds=settings.provider_refresh_margin_seconds),
        telemetry=telemetry,
    )
    authorizer = Authorizer({"sessions": sessions.owner_of, "connections": connections.owner_of})
    provider_use_cases = ProviderUseCases(
        ProviderCatalog(unit_of_work, sealer, audit_recorder, clock, egress), connections
    )
    interceptor = PolicyInterceptor(
        policies,
        Authenticator(access_tokens),
        authorizer,
        rate_limit_gate,
        on_denied=audit_recorder.record_denial,
        metrics=None if registry is None else RpcMetrics(registry),
        tracer=None if tracing is None else tracing.tracer,
        plaintext_only=not serves_tls(settings),
    )
    metrics = None
    if registry is not None and settings.metrics_address:
        registry.register(ScrapedFigures(rate_limit_gate, oauth))
        metrics = MetricsEndpoint(settings.metrics_address, registry)
    server = aio.server(
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
    servicers = (
        IdentityServicer(identity),
        AuditServicer(audit_reader),
        ProviderServicer(provider_use_cases),
    )
    for service, servicer in zip(SERVICES, servicers, strict=True):
        register_service(server, service, servicer, interceptor)
    # The generated function calls nothing but the two add_* methods it provides.
    health_only_generic = cast(aio.Server, GenericHandlersOnly(server))
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, health_only_generic)
    enable_reflection(server, [service.full_name for service in SERVICES])
    return KeyholdServer(
        settings=settings,
        server=server,
        database=database,
        unit_of_work=unit_of_work,
        health=health,
        monitor=monitor,
        key_ring=key_ring,
        access_tokens=access_tokens,
        signing_keys=signing_keys,
        authorizer=authorizer,
        rate_limit_gate=rate_limit_gate,
        throttled_calls=throttled_calls,
        audit_trail=audit_trail,
        audit_recorder=audit_recorder,
        audit_reader=audit_reader,
        listener=listener,
        identity=identity,
        providers=provider_use_cases,
        oauth=oauth,
        hasher=hasher,
        metrics=metrics,
        tracing=tracing,
        interceptor=interceptor,
        vault=VaultRotation(lambda: reseal_all(database, sealer), audit_recorder),
        lockout=lockout,
    )


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        idle_seconds=settings.connection_idle_seconds,
        max_age_seconds=settings.connection_max_age_seconds,
        max_age_grace_seconds=settings.connection_max_age_grace_seconds,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
        max_concurrent_streams=settings.max_concurrent_streams,
        max_connections=settings.max_connections,
    )


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP rereads TLS files."""
    check_plaintext_allowed(settings)  # before migrations, not only at start()
    app = await build_server(settings)
    try:
        await app.start()
    except BaseException:
        await app.stop(grace=0)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_certificates)
    await stop.wait()
    log.info("shutting_down", grace_seconds=settings.shutdown_grace_seconds)
    await app.stop()
