"""A per-provider circuit breaker: after `threshold` consecutive failures calls are
refused at once for `cooldown` seconds, then one trial call decides.

Calls are counted while they are in flight. Once a call has failed, a new one waits
for the outcomes of those still in flight before it starts: when a provider stalls,
the calls that went out together fail together and open the circuit, instead of
letting more calls in, one per failure recorded, to wait out the same stall.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The circuit refuses calls for now."""


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        cooldown_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown_seconds
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._in_flight = 0
        self._outcome = asyncio.Event()  # set, and replaced, whenever a call ends

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._monotonic() - self._opened_at >= self._cooldown:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """One call to the provider, which records its outcome with `succeeded` or
        `failed`; raises CircuitOpen instead when the circuit refuses it. A call that
        ends without an outcome (cancelled) leaves the circuit as it was."""
        trial = await self._admit()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if trial and self._trial_running:  # the trial ended without an outcome
                self._trial_running = False
            self._announce()

    async def _admit(self) -> bool:
        """Wait until the call may start; True when it is the half-open trial."""
        while True:
            state = self.state
            if state is CircuitState.OPEN:
                raise CircuitOpen
            if state is CircuitState.HALF_OPEN:
                if self._trial_running:
                    raise CircuitOpen
                self._trial_running = True
                return True
            if not self._failures or not self._in_flight:
                return False
            await self._outcome.wait()

    def _announce(self) -> None:
        self._outcome.set()
        self._outcome = asyncio.Event()

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self._failures += 1
        self._trial_running = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._monotonic()
