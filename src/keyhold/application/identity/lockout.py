"""Login lockout around the failure store: reserve a password check before evaluating
it, keep the reservation as a counted failure when the check fails, give it back when
it succeeds.

Reservations and give-backs are written through the lockout's own store, each in effect
at once, unless the caller writes them with its unit of work: a reservation through
`uow.login_failures`, committed before the check is evaluated; a login's give-back with
its session (`uow.sessions.start`)."""

from __future__ import annotations

from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.clock import Clock
from keyhold.domain.identity.lockout import (
    GiveBack,
    LockoutPolicy,
    LoginFailureStore,
    LoginLocked,
    Reservation,
    Scope,
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

    async def reserve(
        self, email: str, peer: str, store: LoginFailureStore | None = None
    ) -> Reservation:
        """One password check for `email` from `peer`, reserved before it is evaluated;
        LoginLocked when a counter refuses it (then nothing was counted)."""
        now = self._clock.now()
        reservation = await (store or self._store).reserve(
            self._policy.counters(email, peer), now, self._policy.forget_after
        )
        if reservation.refused_by is not None:
            locked_until = reservation.locked_until or now
            raise LoginLocked(
                max((locked_until - now).total_seconds(), 0.0), reservation.refused_by.scope
            )
        return reservation

    def failed(self, reservation: Reservation) -> None:
        """The check failed: its reservation stays, counted (no write)."""
        for scope in reservation.locks_set():
            self._telemetry.login_locked(scope.value)

    async def forget_stale(self) -> int:
        """Drop the counts that have been quiet longer than the policy remembers."""
        return await self._store.forget_before(self._clock.now() - self._policy.forget_after)

    def give_back(self, reservation: Reservation) -> GiveBack:
        """What a successful check gives back: the reservation, and the account's count
        for this peer reset."""
        return GiveBack(reservation, reset=Scope.ACCOUNT_PEER)

    async def succeeded(self, reservation: Reservation) -> None:
        """The check succeeded: give the reservation back (`give_back`), at once."""
        given = self.give_back(reservation)
        await self._store.release(given.reservation, reset=given.reset)
