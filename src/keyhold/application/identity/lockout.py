"""Login lockout around the failure store: check before verifying, count failures,
reset on success."""

from __future__ import annotations

from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.clock import Clock
from keyhold.domain.errors import ResourceExhausted
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.lockout import (
    NO_FAILURES,
    FailureCount,
    LockoutPolicy,
    LoginFailureStore,
)


class LoginLockout:
    def __init__(
        self,
        store: LoginFailureStore,
        policy: LockoutPolicy,
        clock: Clock,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._telemetry = telemetry

    @staticmethod
    def _account(email: str, peer: str) -> str:
        return f"account:{email}|peer:{peer}"

    @staticmethod
    def _peer(peer: str) -> str:
        return f"peer:{peer}"

    async def check(self, email: str, peer: str) -> FailureCount:
        """Refuse a locked account or peer; else the account's count, for `succeeded`."""
        now = self._clock.now()
        account, whole_peer = await self._store.counts(
            [self._account(email, peer), self._peer(peer)]
        )
        for count in (account, whole_peer):
            if count.locked_until is not None and count.locked_until > now:
                raise ResourceExhausted(
                    "LOGIN_LOCKED",
                    "too many failed logins; try again later",
                    retry_after_seconds=(count.locked_until - now).total_seconds(),
                    domain=DOMAIN,
                )
        return account

    async def failed(self, email: str, peer: str) -> None:
        now = self._clock.now()
        account = await self._store.record_failure(
            self._account(email, peer), now, self._policy, self._policy.threshold
        )
        if account.locked_until is not None:
            self._telemetry.login_locked("account")
        whole_peer = await self._store.record_failure(
            self._peer(peer), now, self._policy, self._policy.peer_threshold
        )
        if whole_peer.locked_until is not None:
            self._telemetry.login_locked("peer")

    async def succeeded(self, email: str, peer: str, checked: FailureCount) -> None:
        """Reset the account's count, unless `check` found none to reset (most logins:
        a write saved). A failure counted while this login was being verified then
        stays; it is forgotten with the others after the policy's window."""
        if checked != NO_FAILURES:
            await self._store.reset(self._account(email, peer))
