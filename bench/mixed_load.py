"""A weighted mix of RPCs driven from its own processes: closed loop, to find the
capacity, or open loop at a fixed rate, to soak.

Each load process ("spawn" start method, its own event loop, like `bench.loadgen`) picks
every call's scenario at random by weight and cycles through that scenario's requests;
processes take disjoint requests (single-use refresh tokens stay single-use).

- Closed loop (`rate=None`): `channels x concurrency` slots, each sending its next call
  as soon as the previous one completes.
- Open loop (`rate` calls/s over all processes): calls are sent on a fixed schedule
  whatever the server's pace, and latency counts from the scheduled send time, so a
  slow server cannot hide its queueing (no coordinated omission). A call due while
  `max_outstanding` calls are in flight is not sent and is counted as `skipped`.

Time is cut into windows of `window_seconds` from a common start; each process reports
each window (calls and errors per scenario, latency percentiles) on the queue as it
ends, and at the end how many calls it issued and how many completed: every call issued
is awaited to its end (or deadline), so `issued - completed` is the number lost.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import queue as queue_module
import random
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc

from bench.loadgen import CallSpec, percentile, run_and_report

_CONNECT_TIMEOUT = 15.0
_START_DELAY = 0.2


@dataclass(frozen=True)
class MixEntry:
    name: str
    spec: CallSpec
    weight: float


@dataclass(frozen=True)
class MixConfig:
    entries: tuple[MixEntry, ...]
    seconds: float
    window_seconds: float
    rate: float | None = None  # calls/s over every process; None: closed loop
    processes: int = 1
    channels: int = 4
    concurrency: int = 8  # closed loop: outstanding calls per channel
    max_outstanding: int = 2000  # open loop, per process
    cpus: tuple[int, ...] = ()  # the load processes' CPUs; () leaves them to the OS


@dataclass
class Window:
    index: int
    calls: Counter[str] = field(default_factory=Counter)  # OK calls per scenario
    errors: Counter[str] = field(default_factory=Counter)  # "scenario CODE"
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds
    by_scenario: dict[str, array[float]] = field(default_factory=dict)  # seconds
    skipped: int = 0

    def merge(self, other: Window) -> None:
        self.calls.update(other.calls)
        self.errors.update(other.errors)
        self.latencies.extend(other.latencies)
        for name, latencies in other.by_scenario.items():
            self.by_scenario.setdefault(name, array("d")).extend(latencies)
        self.skipped += other.skipped

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "calls": sum(self.calls.values()),
            "errors": sum(self.errors.values()),
            "skipped": self.skipped,
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
        }


@dataclass
class Totals:
    issued: int = 0
    completed: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    skipped: int = 0


class _Picker:
    """Each call's scenario by weight; each scenario's requests in turn, this process's
    share only (position `index`, stride `processes`)."""

    def __init__(self, entries: Sequence[MixEntry], index: int, processes: int) -> None:
        self._entries = list(entries)
        self._weights = [entry.weight for entry in entries]
        self._random = random.Random(index)
        self._positions = [index] * len(entries)
        self._stride = processes

    def next(self) -> tuple[int, MixEntry, bytes]:
        (number,) = self._random.choices(range(len(self._entries)), self._weights)
        entry = self._entries[number]
        requests = entry.spec.requests
        request = requests[self._positions[number] % len(requests)]
        self._positions[number] += self._stride
        return number, entry, request


async def _drive(
    target: str,
    config: MixConfig,
    index: int,
    messages: Queue[tuple[str, int, Any]],
    go: Event,
    schedule: Any,  # multiprocessing Array('d', 1): the common start
) -> Totals:
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(config.channels)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)), _CONNECT_TIMEOUT
        )
        callables: list[list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]] = [
            [
                channel.unary_unary(
                    entry.spec.method, request_serializer=None, response_deserializer=None
                )
                for entry in config.entries
            ]
            for channel in channels
        ]
        messages.put(("ready", index, None))
        if not await asyncio.to_thread(go.wait, 60.0):
            raise TimeoutError("the driver never said go")
        start = schedule[0]
        end = start + config.seconds
        picker = _Picker(config.entries, index, config.processes)
        totals = Totals()
        current = Window(0)
        sent = [0]

        def window_of(moment: float) -> int:
            return max(0, int((moment - start) // config.window_seconds))

        def roll(until: int) -> None:
            nonlocal current
            while current.index < until:
                totals.calls.update(current.calls)
                totals.errors.update(current.errors)
                totals.skipped += current.skipped
                messages.put(("window", index, current))
                current = Window(current.index + 1)

        async def one_call(scheduled: float | None) -> None:
            number, entry, request = picker.next()
            call = callables[sent[0] % len(callables)][number]
            sent[0] += 1
            began = time.monotonic() if scheduled is None else scheduled
            code = ""
            try:
                await call(
                    request,
                    metadata=entry.spec.metadata or None,
                    timeout=entry.spec.timeout_seconds,
                )
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            done = time.monotonic()
            roll(window_of(done))
            totals.completed += 1
            if code:
                current.errors[f"{entry.name} {code}"] += 1
            else:
                current.calls[entry.name] += 1
                current.latencies.append(done - began)
                current.by_scenario.setdefault(entry.name, array("d")).append(done - began)

        async def ticker() -> None:
            """Windows end on time even when no call completes (a server that hangs)."""
            while True:
                boundary = start + (current.index + 1) * config.window_seconds
                await asyncio.sleep(max(0.0, boundary - time.monotonic()) + 0.01)
                roll(window_of(time.monotonic()))

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        ticking = asyncio.create_task(ticker())
        if config.rate is None:

            async def slot() -> None:
                while time.monotonic() < end:
                    totals.issued += 1
                    await one_call(None)

            await asyncio.gather(*(slot() for _ in range(config.channels * config.concurrency)))
        else:
            interval = config.processes / config.rate
            due = start + index * interval / config.processes  # processes interleave
            in_flight: set[asyncio.Task[None]] = set()
            while due < end:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(in_flight) >= config.max_outstanding:
                    roll(window_of(due))
                    current.skipped += 1
                else:
                    totals.issued += 1
                    task = asyncio.create_task(one_call(due))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                due += interval
            if in_flight:
                await asyncio.gather(*in_flight)
        ticking.cancel()
        roll(window_of(max(time.monotonic(), end)) + 1)
        return totals
    finally:
        for channel in channels:
            await channel.close()


def _process_main(
    target: str,
    config: MixConfig,
    index: int,
    messages: Queue[tuple[str, int, Any]],
    go: Event,
    schedule: Any,
) -> None:
    drive = _drive(target, config, index, messages, go, schedule)
    run_and_report(drive, index, messages, config.cpus)


@dataclass
class MixRun:
    """A running mix: `start` is the common start (time.monotonic()); `windows()` yields
    merged windows as every process has reported them; `finish()` returns the totals."""

    config: MixConfig
    start: float
    _messages: Queue[tuple[str, int, Any]]
    _processes: Sequence[multiprocessing.process.BaseProcess]
    _pending: dict[int, tuple[int, Window]] = field(default_factory=dict)
    _totals: list[Totals] = field(default_factory=list)

    async def _next(self, deadline: float) -> tuple[str, int, Any]:
        while True:
            try:
                return await asyncio.to_thread(self._messages.get, True, 0.5)
            except queue_module.Empty:
                dead = [p.exitcode for p in self._processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a load process exited with code {dead[0]}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("load processes did not report in time") from None

    def _absorb(self, kind: str, index: int, payload: Any) -> None:
        if kind == "window":
            seen, merged = self._pending.get(payload.index, (0, Window(payload.index)))
            merged.merge(payload)
            self._pending[payload.index] = (seen + 1, merged)
        elif kind == "done":
            self._totals.append(payload)
        else:
            raise RuntimeError(f"load process {index} failed: {payload}")

    async def window(self, number: int, within: float = 30.0) -> Window:
        """Window `number`, merged over every process, once all have reported it."""
        deadline = time.monotonic() + within
        while self._pending.get(number, (0, None))[0] < len(self._processes):
            kind, index, payload = await self._next(deadline)
            self._absorb(kind, index, payload)
        return self._pending.pop(number)[1]

    async def finish(self) -> tuple[Totals, list[Window]]:
        """Wait for every process to end; the totals and the windows not yet taken."""
        deadline = time.monotonic() + 120.0
        while len(self._totals) < len(self._processes):
            kind, index, payload = await self._next(deadline)
            self._absorb(kind, index, payload)
        for process in self._processes:
            await asyncio.to_thread(process.join, 10.0)
        total = Totals()
        for each in self._totals:
            total.issued += each.issued
            total.completed += each.completed
            total.calls.update(each.calls)
            total.errors.update(each.errors)
            total.skipped += each.skipped
        rest = [merged for _, merged in sorted(self._pending.values(), key=lambda p: p[1].index)]
        self._pending.clear()
        return total, rest

    def kill(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()


async def start_mix(target: str, config: MixConfig) -> MixRun:
    """Start the load processes, wait until each is connected, and set them going."""
    context = multiprocessing.get_context("spawn")
    messages: Queue[tuple[str, int, Any]] = context.Queue()
    go = context.Event()
    schedule = context.Array("d", 1, lock=False)
    processes = [
        context.Process(
            target=_process_main,
            args=(target, config, index, messages, go, schedule),
            name=f"mixed-load-{index}",
            daemon=True,
        )
        for index in range(config.processes)
    ]
    for process in processes:
        process.start()
    run = MixRun(config, 0.0, messages, processes)
    try:
        deadline = time.monotonic() + 60.0
        for _ in processes:
            kind, index, payload = await run._next(deadline)
            if kind != "ready":
                raise RuntimeError(f"load process {index} failed: {payload}")
    except BaseException:
        run.kill()
        raise
    run.start = time.monotonic() + _START_DELAY
    schedule[0] = run.start
    go.set()
    return run


async def closed_loop_rate(target: str, config: MixConfig, warmup_seconds: float) -> float:
    """Calls per second the mix reaches in a closed loop: `config.seconds` in all, of
    which the first `warmup_seconds` are not counted (one-second windows)."""
    config = replace(config, rate=None, window_seconds=1.0)
    run = await start_mix(target, config)
    try:
        counts = [
            sum((await run.window(number)).calls.values()) for number in range(int(config.seconds))
        ]
        await run.finish()
    finally:
        run.kill()
    measured = counts[int(warmup_seconds) :]
    return sum(measured) / max(1, len(measured))
