"""The in-process rate-limit storage: exact moving windows, a ceiling on what it
remembers, and eviction that a flood of new keys cannot aim at a limited key."""

from __future__ import annotations

import gc
import secrets
import tracemalloc

import pytest
from limits import parse
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from keyhold.adapters.ratelimit.bounded_memory import BoundedMemoryStorage

# What docs/operations.md ("Memory ceilings") states an entry costs at most.
BYTES_PER_ENTRY = 160


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_moving_window_is_exact() -> None:
    clock = Clock()
    limiter = MovingWindowRateLimiter(BoundedMemoryStorage(1_000, clock))
    three = parse("3/minute")
    for offset in (0.0, 20.0, 40.0):
        clock.now = 1_000_000.0 + offset
        assert await limiter.hit(three, "m", "k")
    clock.now = 1_000_059.0
    assert not await limiter.hit(three, "m", "k")  # 3 in the last 60 s already
    stats = await limiter.get_window_stats(three, "m", "k")
    assert stats.remaining == 0
    assert stats.reset_time == pytest.approx(1_000_060.0)  # the first call leaves then
    clock.now = 1_000_060.5
    assert await limiter.hit(three, "m", "k")
    assert not await limiter.hit(three, "m", "k")
    assert await limiter.hit(three, "m", "other key")


async def test_a_refused_call_is_not_counted() -> None:
    clock = Clock()
    limiter = MovingWindowRateLimiter(BoundedMemoryStorage(1_000, clock))
    two = parse("2/minute")
    assert await limiter.hit(two, "k")
    assert await limiter.hit(two, "k")
    for _ in range(50):
        clock.now += 1
        assert not await limiter.hit(two, "k")
    clock.now = 1_000_060.5
    assert await limiter.hit(two, "k")  # the refusals did not extend the window


async def test_fixed_window_counters_complete_the_interface() -> None:
    clock = Clock()
    storage = BoundedMemoryStorage(1_000, clock)
    limiter = FixedWindowRateLimiter(storage)
    two = parse("2/minute")
    assert await limiter.hit(two, "k")
    assert await limiter.hit(two, "k")
    assert not await limiter.hit(two, "k")
    clock.now += 61
    assert await limiter.hit(two, "k")
    await storage.clear(two.key_for("k"))
    assert await storage.get(two.key_for("k")) == 0


async def test_distinct_keys_never_grow_it_past_its_ceiling() -> None:
    storage = BoundedMemoryStorage(1_000)
    limiter = MovingWindowRateLimiter(storage)
    item = parse("120/minute")
    for _ in range(20_000):
        assert await limiter.hit(item, "m", secrets.token_hex(64))
        assert storage.entries <= 1_000
    assert storage.evictions >= 19_000


async def test_a_flood_of_new_keys_does_not_evict_a_limited_key() -> None:
    """The key an attacker is limited on holds ten calls; each flood key holds one, so
    the flood evicts itself and the limit stands."""
    storage = BoundedMemoryStorage(1_000)
    limiter = MovingWindowRateLimiter(storage)
    ten = parse("10/minute")
    for _ in range(10):
        assert await limiter.hit(ten, "login", "email:victim@example.com")
    for _ in range(50_000):
        await limiter.hit(ten, "login", "email:" + secrets.token_hex(16))
    assert storage.evictions > 40_000
    assert not await limiter.hit(ten, "login", "email:victim@example.com")


async def test_a_full_storage_still_counts_and_refuses_new_keys() -> None:
    storage = BoundedMemoryStorage(1_000)
    limiter = MovingWindowRateLimiter(storage)
    ten = parse("10/minute")
    for _ in range(5_000):
        await limiter.hit(ten, "flood", secrets.token_hex(16))
    assert all([await limiter.hit(ten, "legitimate") for _ in range(10)])
    assert not await limiter.hit(ten, "legitimate")


async def test_an_entry_costs_what_the_operations_guide_says() -> None:
    """Keys of the longest value the API accepts and far beyond: a key is kept as a
    digest, so the ceiling times the stated size bounds the storage's memory."""
    ceiling = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        storage = BoundedMemoryStorage(ceiling)
        limiter = MovingWindowRateLimiter(storage)
        item = parse("120/minute")
        for index in range(30_000):
            value = secrets.token_hex(2_048)
            await limiter.hit(item, "m", value)
            if index % 3 == 0:  # some keys hold several calls
                await limiter.hit(item, "m", value)
        del value
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert storage.entries <= ceiling
    assert held <= ceiling * BYTES_PER_ENTRY, f"{held / ceiling:.0f} bytes per entry"
