"""A small closed-loop load for fault tests: workers call an RPC over and over until told
to stop, and every call's outcome and duration is kept for the assertions."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.support.status import rich_error


@dataclass(frozen=True)
class Call:
    index: int
    started: float  # time.monotonic()
    seconds: float
    code: grpc.StatusCode
    reason: str | None
    response: Any  # None unless OK
    info: dict[str, str] = field(default_factory=dict)  # ErrorInfo metadata


@dataclass
class Load:
    """`call(index)` is awaited by `workers` loops; each index is used once."""

    call: Callable[[int], Awaitable[Any]]
    workers: int = 8
    calls: list[Call] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _indexes: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> list[Call]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.calls

    def ok(self) -> list[Call]:
        return [c for c in self.calls if c.code is grpc.StatusCode.OK]

    def codes(self) -> Counter[tuple[str, str | None]]:
        return Counter((c.code.name, c.reason) for c in self.calls)

    async def wait_for_ok(self, count: int, within: float, since: float = 0.0) -> None:
        """Until `count` calls started after `since` have succeeded."""
        deadline = time.monotonic() + within
        while sum(1 for c in self.ok() if c.started >= since) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} successes in {within}s: {self.codes()}")
            await asyncio.sleep(0.02)

    async def _worker(self) -> None:
        while not self._stop.is_set():
            index = next(self._indexes)
            started = time.monotonic()
            try:
                response = await self.call(index)
            except grpc.aio.AioRpcError as error:
                rich = rich_error(error)
                info = dict(rich.error_info.metadata) if rich.error_info else {}
                outcome = Call(
                    index, started, time.monotonic() - started, rich.code, rich.reason, None, info
                )
            else:
                outcome = Call(
                    index, started, time.monotonic() - started, grpc.StatusCode.OK, None, response
                )
            self.calls.append(outcome)
            if outcome.code is not grpc.StatusCode.OK:
                await asyncio.sleep(0.01)  # no hot loop against a refusing server
