"""The provider circuit breaker: opening, the half-open trial, and calls in flight."""

from __future__ import annotations

import asyncio

import pytest

from keyhold.adapters.oauth.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _fail(breaker: CircuitBreaker, release: asyncio.Event | None = None) -> None:
    async with breaker.attempt():
        if release is not None:
            await release.wait()
        breaker.failed()


async def _succeed(breaker: CircuitBreaker, release: asyncio.Event | None = None) -> None:
    async with breaker.attempt():
        if release is not None:
            await release.wait()
        breaker.succeeded()


async def test_opens_after_the_threshold_then_one_trial_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_seconds=10, monotonic=clock)
    for _ in range(3):
        await _fail(breaker)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        await _succeed(breaker)
    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN
    trial_release = asyncio.Event()
    trial = asyncio.create_task(_succeed(breaker, trial_release))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):  # only one trial at a time
        await _succeed(breaker)
    trial_release.set()
    await trial
    assert breaker.state is CircuitState.CLOSED


async def test_calls_that_fail_together_open_it_before_another_starts() -> None:
    """Five calls stall together; the first failure must not let a sixth call in to
    wait out the same stall while the other four are still to fail."""
    breaker = CircuitBreaker(threshold=3, cooldown_seconds=10, monotonic=Clock())
    stall = asyncio.Event()
    stalled = [asyncio.create_task(_fail(breaker, stall)) for _ in range(5)]
    await asyncio.sleep(0)
    first = asyncio.Event()
    one = asyncio.create_task(_fail(breaker, first))
    await asyncio.sleep(0)
    first.set()
    await one  # one failure recorded; five calls still in flight
    started = False

    async def late() -> None:
        nonlocal started
        async with breaker.attempt():
            started = True
            breaker.succeeded()

    waiting = asyncio.create_task(late())
    await asyncio.sleep(0)
    assert not waiting.done()  # waits for the outcomes in flight
    assert not started
    stall.set()
    await asyncio.gather(*stalled)
    with pytest.raises(CircuitOpen):
        await waiting
    assert not started


async def test_a_waiting_call_goes_ahead_when_the_calls_in_flight_succeed() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_seconds=10, monotonic=Clock())
    release = asyncio.Event()
    in_flight = asyncio.create_task(_succeed(breaker, release))
    await asyncio.sleep(0)
    await _fail(breaker)
    waiting = asyncio.create_task(_succeed(breaker))
    await asyncio.sleep(0)
    assert not waiting.done()
    release.set()
    await asyncio.gather(in_flight, waiting)
    assert breaker.state is CircuitState.CLOSED


async def test_a_cancelled_trial_leaves_the_next_call_its_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_seconds=5, monotonic=clock)
    await _fail(breaker)
    clock.now += 5
    trial = asyncio.create_task(_succeed(breaker, asyncio.Event()))  # never answered
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    await _succeed(breaker)  # the circuit is not wedged open by the abandoned trial
    assert breaker.state is CircuitState.CLOSED
