"""Prometheus metrics, each server in its own `CollectorRegistry`: the use cases' events
(the `Telemetry` port), RPC counts and latencies, and figures read at scrape time from the
objects that already keep them (rate-limit gate, circuit breakers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keyhold.adapters.oauth.circuit_breaker import CircuitState
from keyhold.application.telemetry import LockScope, RefreshOutcome, TokenKind

RpcObserver = Callable[[str, float], None]
"""Called once per completed RPC of one method with its status code name and seconds."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusTelemetry:
    """The `Telemetry` port as Prometheus counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lockouts = Counter(
            "keyhold_login_lockouts",
            "Failed logins that set or lengthened a lockout, by what was locked",
            ["scope"],
            registry=registry,
        )
        self._tokens = Counter(
            "keyhold_tokens_issued",
            "Tokens issued, by kind (access, refresh, service)",
            ["kind"],
            registry=registry,
        )
        self._reuse = Counter(
            "keyhold_refresh_token_reuse_detected",
            "Spent refresh tokens presented again; each revoked its session",
            registry=registry,
        )
        self._audit = Counter(
            "keyhold_audit_appends",
            "Records appended to the audit trail, by outcome",
            ["outcome"],
            registry=registry,
        )
        self._provider_refreshes = Counter(
            "keyhold_provider_refreshes",
            "Upstream token refreshes, by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )

    def login_locked(self, scope: LockScope) -> None:
        self._lockouts.labels(scope).inc()

    def token_issued(self, kind: TokenKind) -> None:
        self._tokens.labels(kind).inc()

    def refresh_reuse_detected(self) -> None:
        self._reuse.inc()

    def audit_appended(self, outcome: str) -> None:
        self._audit.labels(outcome).inc()

    def provider_refreshed(self, provider: str, outcome: RefreshOutcome) -> None:
        self._provider_refreshes.labels(provider, outcome).inc()


class RpcMetrics:
    """RPCs completed by method and status code, and their latency by method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter(
            "keyhold_rpc_handled",
            "RPCs completed, by full method name and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "keyhold_rpc_duration_seconds",
            "Time from admission to the last response or the status, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def for_method(self, method: str) -> RpcObserver:
        """The observer for one method; its label lookups are done here, not per call."""
        latency = self._latency.labels(method)
        handled = self._handled
        by_code = {"OK": handled.labels(method, "OK")}

        def observe(code: str, seconds: float) -> None:
            counter = by_code.get(code)
            if counter is None:
                counter = by_code[code] = handled.labels(method, code)
            counter.inc()
            latency.observe(seconds)

        return observe


class RateLimitFigures(Protocol):
    storage_failures: int

    @property
    def rejections(self) -> Mapping[str, int]: ...


class BreakerStates(Protocol):
    def breaker_states(self) -> dict[str, CircuitState]: ...


class ScrapedFigures(Collector):
    """Counts the rate-limit gate and the circuit breakers keep anyway, read when scraped:
    nothing is added to the calls that change them."""

    def __init__(self, rate_limits: RateLimitFigures, breakers: BreakerStates) -> None:
        self._rate_limits = rate_limits
        self._breakers = breakers

    def collect(self) -> Iterator[Metric]:
        rejections = CounterMetricFamily(
            "keyhold_rate_limit_rejections",
            "Calls refused RESOURCE_EXHAUSTED by a rate limit, by method",
            labels=["method"],
        )
        for method, count in dict(self._rate_limits.rejections).items():
            rejections.add_metric([method], count)
        yield rejections
        yield CounterMetricFamily(
            "keyhold_rate_limit_storage_failures",
            "Rate-limit checks skipped because the limit storage failed (calls let through)",
            value=self._rate_limits.storage_failures,
        )
        yield _breaker_gauge(dict(self._breakers.breaker_states()).items())


def _breaker_gauge(states: Iterable[tuple[str, CircuitState]]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "keyhold_provider_circuit_state",
        "1 for each provider's current circuit-breaker state, 0 for the others",
        labels=["provider", "state"],
    )
    for provider, current in states:
        for state in CircuitState:
            gauge.add_metric([provider, state.value], 1.0 if state is current else 0.0)
    return gauge
