"""A closed-loop gRPC load generator that runs in its own processes.

Each load process ("spawn" start method, its own event loop) opens `channels` grpc.aio
channels (each its own TCP connection) and keeps `concurrency` calls outstanding on each:
a call is sent as soon as the previous one on its slot completes. The calls are generic
unary calls, bytes in and bytes out, so the generator needs no generated stubs: a
`CallSpec` names the full method, the serialized request(s) and the metadata.

All processes start together when the driver says go, warm up for `warmup_seconds`, then
measure for `seconds`. A call counts when it completes inside the measured window; the
driver can sample the server's CPU time exactly at the window's edges (`sample`).
`time.monotonic()` is CLOCK_MONOTONIC on Linux, so its readings agree across processes.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import queue as queue_module
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_CONNECT_TIMEOUT = 15.0
_START_DELAY = 0.05  # seconds between "go" and the warm-up's start, to let every loop wake


@dataclass(frozen=True)
class CallSpec:
    """One unary RPC, picklable: `requests` are cycled through, one per call."""

    method: str  # "/package.Service/Method"
    requests: tuple[bytes, ...]
    metadata: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 10.0

    @classmethod
    def of(
        cls,
        method: str,
        request: bytes | Sequence[bytes],
        metadata: Sequence[tuple[str, str]] = (),
        timeout_seconds: float = 10.0,
    ) -> CallSpec:
        requests = (request,) if isinstance(request, bytes) else tuple(request)
        if not requests:
            raise ValueError("a CallSpec needs at least one request")
        return cls(method, requests, tuple(metadata), timeout_seconds)


@dataclass(frozen=True)
class LoadConfig:
    channels: int = 4
    concurrency: int = 8  # outstanding calls per channel
    processes: int = 1
    warmup_seconds: float = 2.0
    seconds: float = 5.0
    cpus: tuple[int, ...] = ()  # the load processes' CPUs; () leaves them to the OS


@dataclass
class LoadResult:
    """Merged over every load process; latencies in milliseconds."""

    calls: int
    seconds: float
    calls_per_second: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    warmup_calls: int
    client_cpu_seconds: float
    server_cpu_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _WorkerResult:
    calls: int
    warmup_calls: int
    latencies: array[float]  # seconds, of the calls completed inside the window
    errors: dict[str, int]
    cpu_seconds: float  # this process's CPU time during the window


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _drive(
    target: str,
    spec: CallSpec,
    config: LoadConfig,
    index: int,
    ready: Queue[tuple[str, int, Any]],
    go: Event,
    schedule: Any,  # multiprocessing Array('d', 3): warm-up start, window start, window end
) -> _WorkerResult:
    channels = [
        grpc.aio.insecure_channel(
            target,
            # A private subchannel pool: each channel gets its own connection.
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for _ in range(config.channels)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)),
            _CONNECT_TIMEOUT,
        )
        calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            channel.unary_unary(spec.method, request_serializer=None, response_deserializer=None)
            for channel in channels
        ]
        ready.put(("ready", index, None))
        if not await asyncio.to_thread(go.wait, 60.0):
            raise TimeoutError("the driver never said go")
        begin, window_start, window_end = schedule[0], schedule[1], schedule[2]

        latencies: array[float] = array("d")
        errors: Counter[str] = Counter()
        counts = {"calls": 0, "warmup": 0}
        metadata = spec.metadata or None
        requests = spec.requests
        slots = config.channels * config.concurrency
        stride = slots * config.processes  # every slot of every process takes its own requests
        cpu: dict[str, float] = {}

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, window_start - time.monotonic()))
            cpu["start"] = time.process_time()
            await asyncio.sleep(max(0.0, window_end - time.monotonic()))
            cpu["end"] = time.process_time()

        async def slot(number: int) -> None:
            call = calls[number % len(calls)]
            position = index * slots + number
            await asyncio.sleep(max(0.0, begin - time.monotonic()))
            while True:
                sent = time.monotonic()
                if sent >= window_end:
                    return
                request = requests[position % len(requests)]
                position += stride
                code = ""
                try:
                    await call(request, metadata=metadata, timeout=spec.timeout_seconds)
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                done = time.monotonic()
                if done < window_start:
                    counts["warmup"] += 1
                elif done <= window_end:
                    if code:
                        errors[code] += 1
                    else:
                        counts["calls"] += 1
                        latencies.append(done - sent)

        sampler = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(slot(number) for number in range(slots)))
        await sampler
        return _WorkerResult(
            counts["calls"],
            counts["warmup"],
            latencies,
            dict(errors),
            cpu.get("end", 0.0) - cpu.get("start", 0.0),
        )
    finally:
        for channel in channels:
            await channel.close()


def run_and_report(
    drive: Coroutine[Any, Any, Any],
    index: int,
    messages: Queue[tuple[str, int, Any]],
    cpus: tuple[int, ...] = (),
) -> None:
    """A load process's life: on `cpus` (if any), run `drive` and put its result, or
    its failure, on `messages`, where the driver is waiting for it."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        result = asyncio.run(drive)
    except BaseException as error:
        messages.put(("failed", index, f"{type(error).__name__}: {error}"))
        raise
    messages.put(("done", index, result))


def _process_main(
    target: str,
    spec: CallSpec,
    config: LoadConfig,
    index: int,
    ready: Queue[tuple[str, int, Any]],
    go: Event,
    schedule: Any,
) -> None:
    drive = _drive(target, spec, config, index, ready, go, schedule)
    run_and_report(drive, index, ready, config.cpus)


async def _next_message(
    messages: Queue[tuple[str, int, Any]],
    processes: Sequence[multiprocessing.process.BaseProcess],
    deadline: float,
) -> tuple[str, int, Any]:
    while True:
        try:
            return await asyncio.to_thread(messages.get, True, 0.5)
        except queue_module.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load process exited with code {dead[0]}") from None
            if time.monotonic() > deadline:
                raise TimeoutError("load processes did not report in time") from None


async def run_load(
    target: str,
    spec: CallSpec,
    config: LoadConfig,
    sample: Callable[[], float] | None = None,
) -> LoadResult:
    """Run the load against `target` ("host:port"); `sample()` is read at the window's edges."""
    context = multiprocessing.get_context("spawn")
    ready: Queue[tuple[str, int, Any]] = context.Queue()
    go = context.Event()
    schedule = context.Array("d", 3, lock=False)
    processes = [
        context.Process(
            target=_process_main,
            args=(target, spec, config, index, ready, go, schedule),
            name=f"loadgen-{index}",
            daemon=True,
        )
        for index in range(config.processes)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 60.0
        for _ in processes:
            kind, index, payload = await _next_message(ready, processes, deadline)
            if kind != "ready":
                raise RuntimeError(f"load process {index} failed: {payload}")
        begin = time.monotonic() + _START_DELAY
        window_start = begin + config.warmup_seconds
        window_end = window_start + config.seconds
        schedule[0], schedule[1], schedule[2] = begin, window_start, window_end
        go.set()

        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        sample_start = sample() if sample is not None else None
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        sample_end = sample() if sample is not None else None

        results: list[_WorkerResult] = []
        deadline = time.monotonic() + spec.timeout_seconds + 30.0
        for _ in processes:
            kind, index, payload = await _next_message(ready, processes, deadline)
            if kind != "done":
                raise RuntimeError(f"load process {index} failed: {payload}")
            results.append(payload)
    finally:
        go.set()
        for process in processes:
            await asyncio.to_thread(process.join, 10.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5.0)

    latencies = sorted(latency for result in results for latency in result.latencies)
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result.errors)
    calls = sum(result.calls for result in results)
    server_cpu = None
    if sample_start is not None and sample_end is not None:
        server_cpu = sample_end - sample_start
    return LoadResult(
        calls=calls,
        seconds=config.seconds,
        calls_per_second=calls / config.seconds,
        latency_ms={f"p{p:g}": round(percentile(latencies, p) * 1000.0, 3) for p in PERCENTILES},
        errors=dict(sorted(errors.items())),
        warmup_calls=sum(result.warmup_calls for result in results),
        client_cpu_seconds=round(sum(result.cpu_seconds for result in results), 3),
        server_cpu_seconds=server_cpu,
    )
