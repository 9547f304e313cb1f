"""grpc.health.v1 for the whole server ("") and each Keyhold service, driven by the
database's reachability and by shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

log = structlog.get_logger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(self, service_names: list[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._names = ["", *service_names]
        self.serving = False
        self._shutting_down = False

    async def set_serving(self, serving: bool) -> None:
        if self._shutting_down or serving == self.serving:
            return
        self.serving = serving
        for name in self._names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        log.info("health_changed", serving=serving)

    async def shutdown(self) -> None:
        await self.set_serving(False)
        self._shutting_down = True
        await self.servicer.enter_graceful_shutdown()


class DatabaseMonitor:
    """Probes the database; NOT_SERVING while it is unreachable, SERVING once it is back.

    A failed query elsewhere sets `suspected`, which marks the server NOT_SERVING at
    once and makes the monitor probe again quickly until the database answers.
    """

    def __init__(
        self,
        probe: Callable[[float], Awaitable[bool]],
        health: HealthReporter,
        interval: float,
        suspected: asyncio.Event,
    ) -> None:
        """`probe(within_seconds)`: whether the database answered in time."""
        self._probe = probe
        self._health = health
        self._interval = interval
        self._wake = suspected
        self._task: asyncio.Task[None] | None = None

    async def check_now(self) -> bool:
        ok = await self._probe(min(self._interval, 2.0))
        await self._health.set_serving(ok)
        return ok

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyhold-database-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if self._wake.is_set():
                self._wake.clear()
                await self._health.set_serving(False)
            ok = await self.check_now()
            delay = self._interval if ok else min(self._interval, 0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
