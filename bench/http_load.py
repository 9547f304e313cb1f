"""Closed-loop HTTP load for the OAuth 2.0 / OIDC endpoints, in a process of its own:
`concurrency` keep-alive HTTP/1.1 connections with one request outstanding on each,
each request taken in turn from a list, latencies and status codes counted in the
measured window only. The requests are written and their answers read on asyncio
streams directly: a full HTTP client library spends more CPU per call than the server
does, and one load core could not keep a server core busy.

The window is given in CLOCK_MONOTONIC time, which every process of the machine
shares, so that the driver can read the server's CPU time at the same edges."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HttpSpec:
    method: str
    path: str
    bodies: tuple[bytes, ...] = (b"",)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class HttpResult:
    calls: int = 0
    warmup_calls: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu_seconds: float = 0.0


def _request_bytes(host: str, spec: HttpSpec, body: bytes) -> bytes:
    lines = [f"{spec.method} {spec.path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in spec.headers]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Reads one response (Content-Length framed); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _drive(
    base: str, spec: HttpSpec, concurrency: int, starts: float, ends: float
) -> HttpResult:
    result = HttpResult()
    address = base.removeprefix("http://")
    host, _, port = address.rpartition(":")
    requests = [_request_bytes(address, spec, body) for body in spec.bodies]

    async def worker(offset: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        index = offset
        try:
            while (now := time.monotonic()) < ends:
                writer.write(requests[index % len(requests)])
                index += concurrency
                try:
                    status = await _answer(reader)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                    result.errors[type(exc).__name__] += 1
                    return
                done = time.monotonic()
                if now < starts:
                    result.warmup_calls += 1
                elif done <= ends:
                    result.calls += 1
                    result.latencies.append(done - now)
                    result.statuses[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return result


def _process(
    base: str,
    spec: HttpSpec,
    concurrency: int,
    starts: float,
    ends: float,
    cpus: tuple[int, ...],
    out: multiprocessing.Queue[HttpResult],
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_drive(base, spec, concurrency, starts, ends))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_seconds = (after.ru_utime + after.ru_stime) - (
        before.ru_utime + before.ru_stime
    )
    out.put(result)


async def run_http_load(
    base: str,
    spec: HttpSpec,
    *,
    concurrency: int,
    warmup_seconds: float,
    seconds: float,
    cpus: tuple[int, ...],
    server_cpu_seconds: object,
) -> tuple[HttpResult, float]:
    """The load's result and the server's CPU seconds in the window (from
    `server_cpu_seconds()`, read at the window's edges)."""
    read_cpu = server_cpu_seconds
    assert callable(read_cpu)
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[HttpResult] = context.Queue()
    starts = time.monotonic() + 1.0 + warmup_seconds  # a second to start the process
    ends = starts + seconds
    process = context.Process(
        target=_process, args=(base, spec, concurrency, starts, ends, cpus, out)
    )
    process.start()
    await asyncio.sleep(max(0.0, starts - time.monotonic()))
    cpu_before = float(read_cpu())
    await asyncio.sleep(max(0.0, ends - time.monotonic()))
    cpu_after = float(read_cpu())
    result: HttpResult = await asyncio.to_thread(out.get, True, 60.0)
    await asyncio.to_thread(process.join, 10.0)
    return result, cpu_after - cpu_before
