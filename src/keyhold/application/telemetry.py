"""What operators count, said by the use cases in their own words: a port, so that the
application names the events and an adapter (Prometheus) counts them."""

from __future__ import annotations

from typing import Literal, Protocol

TokenKind = Literal["access", "refresh", "service", "exchanged"]
LockScope = Literal["account", "peer", "account_ceiling"]
RefreshOutcome = Literal["succeeded", "rejected", "unreachable"]


class Telemetry(Protocol):
    def login_locked(self, scope: LockScope) -> None:
        """A failed password check set or lengthened a lock: on an account for one peer
        (`account`), on a peer (`peer`), or on an account for every peer, past its
        ceiling (`account_ceiling`)."""
        ...

    def token_issued(self, kind: TokenKind) -> None: ...

    def refresh_reuse_detected(self) -> None: ...

    def audit_appended(self, outcome: str) -> None: ...

    def provider_refreshed(self, provider: str, outcome: RefreshOutcome) -> None: ...


class NoTelemetry:
    """Counts nothing: metrics are off."""

    def login_locked(self, scope: LockScope) -> None:
        return None

    def token_issued(self, kind: TokenKind) -> None:
        return None

    def refresh_reuse_detected(self) -> None:
        return None

    def audit_appended(self, outcome: str) -> None:
        return None

    def provider_refreshed(self, provider: str, outcome: RefreshOutcome) -> None:
        return None


NO_TELEMETRY: Telemetry = NoTelemetry()
