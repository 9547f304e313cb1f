"""In-memory counters for one process, or Redis counters shared by every replica."""

from __future__ import annotations

from typing import Any

from coredis.retry import NoRetryPolicy
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter


def create_rate_limiter(redis_url: str | None) -> MovingWindowRateLimiter:
    """A moving window limiter: N per minute means N in any 60 s, exactly."""
    if redis_url is None:
        return MovingWindowRateLimiter(MemoryStorage())
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
