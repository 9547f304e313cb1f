"""The process: puts the contexts together (`keyhold.wiring`), serves, and stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from opentelemetry.trace import TracerProvider

from keyhold.adapters.oauth.egress_transport import Resolver, system_resolver
from keyhold.adapters.persistence.notifications import PostgresListener
from keyhold.adapters.persistence.vault_rotation import reseal_all
from keyhold.api.http.listener import HttpListener
from keyhold.api.tls import ReloadingCertificates
from keyhold.application.vault import VaultRotation
from keyhold.domain.clock import Clock, SystemClock
from keyhold.domain.errors import Unavailable
from keyhold.event_loop import running_loop_name
from keyhold.grpc_transport import experiments_in_effect
from keyhold.log_output import flush_lines
from keyhold.settings import Settings
from keyhold.wiring.audit import Audit, wire_audit
from keyhold.wiring.grpc_api import SERVICE_NAMES, GrpcApi, wire_grpc_api
from keyhold.wiring.http_api import wire_http_api
from keyhold.wiring.identity import Identity, wire_identity
from keyhold.wiring.platform import Platform, wire_platform
from keyhold.wiring.provider import Providers, wire_providers
from keyhold.wiring.replicas import replica_listener
from keyhold.wiring.transport import certificates_for, check_plaintext_allowed

log = structlog.get_logger(__name__)
KEY_RING_REFRESH_SECONDS = 60.0
LOGIN_FAILURES_SWEEP_SECONDS = 600.0
# After the grace period: how long cancelled handlers get to write their audit outcomes.
HANDLER_CLEANUP_SECONDS = 5.0


@dataclass
class KeyholdServer:
    """A built server; `start()` binds and serves, `stop()` drains and closes."""

    settings: Settings
    platform: Platform
    audit: Audit
    identity: Identity
    providers: Providers
    api: GrpcApi
    vault: VaultRotation  # `keyhold vault reseal`
    listener: PostgresListener | None  # other replicas' announcements; None on SQLite
    http: HttpListener | None  # the OAuth 2.0 / OIDC endpoints; None when not configured
    port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    certificates: ReloadingCertificates | None = None
    _chores: list[asyncio.Task[None]] = field(default_factory=list)
    _reloads: set[asyncio.Task[bool]] = field(default_factory=set)

    async def start(self) -> int:
        """Bind and serve. Raises TlsConfigurationError for unusable TLS files, or for
        plaintext on a non-loopback address without `allow_plaintext`."""
        self.certificates = await asyncio.to_thread(certificates_for, self.settings)
        self.identity.key_ring.replace(await self.identity.signing_keys.ensure_signer())
        address, server = self.settings.listen_address, self.api.server
        if self.certificates is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.certificates.credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        if self.api.metrics is not None:
            self.metrics_port = self.api.metrics.start()
        await server.start()
        if self.http is not None:
            self.http_port = await self.http.start()
        await self.platform.monitor.check_now()
        self.platform.monitor.start()
        if self.listener is not None:
            self.listener.start()
        self._chores = [
            # A backstop for missed rotation notices.
            _every(KEY_RING_REFRESH_SECONDS, self.identity.key_ring.reload, "key_ring_refresh"),
            # Lockout counts quiet for longer than the lockout remembers them.
            _every(
                LOGIN_FAILURES_SWEEP_SECONDS,
                self.identity.lockout.forget_stale,
                "login_failures_sweep",
            ),
            # Client assertions past their expiry could not be replayed anyway.
            _every(
                LOGIN_FAILURES_SWEEP_SECONDS,
                lambda: self.identity.assertion_replays.forget_before(self.platform.clock.now()),
                "assertion_replays_sweep",
            ),
        ]
        log.info(
            "serving",
            address=address,
            port=self.port,
            http_port=self.http_port or None,
            metrics_port=self.metrics_port or None,
            tracing=self.platform.tracing is not None,
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
        task = asyncio.create_task(asyncio.to_thread(self._reload_both, self.certificates))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return task

    def _reload_both(self, certificates: ReloadingCertificates) -> bool:
        reloaded = certificates.reload()
        if reloaded and self.http is not None:
            self.http.reload_certificate()
        return reloaded

    async def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get `grace`."""
        await self.platform.health.shutdown()
        await self.platform.monitor.stop()
        for chore in self._chores:
            chore.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        grace_seconds = self.settings.shutdown_grace_seconds if grace is None else grace
        if self.http is not None:
            await self.http.stop()
        await self.api.server.stop(grace_seconds)
        await self.api.interceptor.drain(HANDLER_CLEANUP_SECONDS)
        await self.audit.throttled_calls.flush()
        if self.listener is not None:
            await self.listener.stop()
        await self.platform.database.dispose()
        await self.providers.oauth.close()
        await self.identity.issuer_keys.close()
        self.identity.hasher.close()
        if self.api.metrics is not None:
            await self.api.metrics.stop()
        if self.platform.tracing is not None:
            await asyncio.to_thread(self.platform.tracing.shutdown)
        log.info("stopped")
        flush_lines()  # the last lines, before the process may end


def _every(seconds: float, work: Callable[[], Awaitable[object]], name: str) -> asyncio.Task[None]:
    """`work` every `seconds` until cancelled; a database outage is logged, not raised."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Unavailable:
                log.warning(f"{name}_failed")

    return asyncio.create_task(repeat(), name=f"keyhold-{name}")


async def build_server(
    settings: Settings,
    clock: Clock | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    egress_resolver: Resolver = system_resolver,
) -> KeyholdServer:
    """`tracer_provider`: trace with it (tests); otherwise traces are exported only when
    `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing is instrumented when it is not.
    `egress_resolver`: resolves the host names of providers and of trusted issuers'
    JWKS URLs (tests: names without DNS)."""
    platform = await wire_platform(settings, clock or SystemClock(), SERVICE_NAMES, tracer_provider)
    audit = wire_audit(platform)
    identity = wire_identity(platform, audit, egress_resolver)
    providers = wire_providers(platform, audit, egress_resolver)
    database, sealer = platform.database, platform.sealer
    api = wire_grpc_api(platform, audit, identity, providers)
    return KeyholdServer(
        settings=settings,
        platform=platform,
        audit=audit,
        identity=identity,
        providers=providers,
        api=api,
        http=wire_http_api(platform, identity, api),
        vault=VaultRotation(lambda: reseal_all(database, sealer), audit.recorder),
        listener=replica_listener(platform, audit, identity),
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
