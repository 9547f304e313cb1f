"""In-memory counters for one process (bounded), or Redis counters shared by every
replica (bounded by their expiry: Redis forgets a window when it ends)."""

from __future__ import annotations

from typing import Any

from coredis.retry import NoRetryPolicy
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .bounded_memory import BoundedMemoryStorage


def create_rate_limiter(redis_url: str | None, memory_entries: int) -> MovingWindowRateLimiter:
    """A moving window limiter: N per minute means N in any 60 s, exactly. Without
    Redis, its counters hold at most `memory_entries` entries (`BoundedMemoryStorage`)."""
    if redis_url is None:
        return MovingWindowRateLimiter(BoundedMemoryStorage(memory_entries))
    options: dict[str, Any] = {
        "stream_timeout": 0.5,
        "connect_timeout": 0.5,
        # One try: coredis retries timeouts twice by default, which holds every call for
        # 1.5 s (not 0.5) while Redis hangs; failing open is the fallback.
        "retry_policy": NoRetryPolicy(),
    }
    return MovingWindowRateLimiter(
        RedisStorage(
            "async+" + redis_url,
            implementation="coredis",
            key_prefix="keyhold",
            wrap_exceptions=True,  # every Redis failure surfaces as limits' StorageError
            **options,
        )
    )
