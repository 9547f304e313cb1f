"""Rate limiting with the `limits` library, keyed as each method's policy says.

If the limit storage (Redis) cannot be reached, calls are let through and a warning
is logged and counted: losing the limiter must not take the service down.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog
from limits.aio.strategies import RateLimiter
from limits.errors import StorageError

from keyhold.api.policy import MethodPolicy, RateLimit
from keyhold.domain.call import CallContext
from keyhold.domain.errors import ResourceExhausted
from keyhold.policy.v1 import policy_pb2

from .authorization import field_value

log = structlog.get_logger(__name__)


Refusal = Callable[[CallContext, ResourceExhausted, str], Awaitable[None]]
"""Told of each refused call: the call, the refusal, and the key it was counted under."""


async def _nothing_to_tell(call: CallContext, error: ResourceExhausted, key: str) -> None:
    return None


class RateLimitGate:
    def __init__(
        self,
        limiter: RateLimiter,
        *,
        enabled: bool = True,
        on_refused: Refusal = _nothing_to_tell,
    ) -> None:
        self._limiter = limiter
        self._enabled = enabled
        self._on_refused = on_refused
        self.storage_failures = 0
        self.rejections: Counter[str] = Counter()  # by method

    def _identity(self, limit: RateLimit, call: CallContext, request: object) -> str:
        if limit.key == policy_pb2.RATE_LIMIT_KEY_PEER:
            return "peer:" + call.peer_ip
        if limit.key == policy_pb2.RATE_LIMIT_KEY_PRINCIPAL:
            subject = call.principal.subject
            return subject if subject else "peer:" + call.peer_ip
        if limit.key == policy_pb2.RATE_LIMIT_KEY_FIELD:
            return f"{limit.field}:" + field_value(request, (limit.field,)).strip().lower()
        return "global"

    def applies_to(self, policy: MethodPolicy) -> bool:
        """Whether `check` has anything to count for calls of this method."""
        return self._enabled and bool(policy.rate_limits)

    async def check(self, policy: MethodPolicy, call: CallContext, request: object) -> None:
        if not self._enabled:
            return
        for limit in policy.rate_limits:
            identity = self._identity(limit, call, request)
            try:
                allowed = await self._limiter.hit(limit.item, policy.full_method, identity)
                if allowed:
                    continue
                stats = await self._limiter.get_window_stats(
                    limit.item, policy.full_method, identity
                )
            except StorageError as exc:
                self.storage_failures += 1
                log.warning("rate_limit_storage_unavailable", error=type(exc).__name__)
                return
            self.rejections[policy.full_method] += 1
            refusal = ResourceExhausted(
                "RATE_LIMITED",
                f"too many calls: the limit is {limit.text}",
                retry_after_seconds=max(stats.reset_time - time.time(), 0.0),
                metadata={"limit": limit.text},
            )
            await self._on_refused(call, refusal, identity)
            raise refusal
