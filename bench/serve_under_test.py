"""Servers under test, each in its own process, and their CPU time and memory from /proc.

`keyhold_server` runs `python -m keyhold.cli serve` configured through `KEYHOLD_*`
variables and waits for `grpc.health.v1.Health/Check` to answer SERVING; `bare_server`
runs `bench/bare_server.py` (no interceptors, one raw-bytes echo method) and waits for an
echo. Both yield a `ServerProcess` whose `cpu_seconds()` is the user + system CPU time of
the process and its descendants, read from `/proc/<pid>/stat`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.grpc_transport import VARIABLE

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BARE_METHOD = "/bench.Bare/Echo"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_START_TIMEOUT = 60.0


def free_port() -> int:
    """A port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_key_encryption_key(key_id: str = "k1") -> str:
    """A `KEYHOLD_KEY_ENCRYPTION_KEYS` value: `id:` + base64 of 32 random bytes."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in map(int, children):
                found.append(child)
                pending.append(child)
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime (reaped children) of one process, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parens
    return sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5)


def process_tree_cpu_seconds(pid: int) -> float:
    return sum(_cpu_ticks(each) for each in (pid, *_descendants(pid))) / _CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set size) of one process, in MB (10^6 bytes)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1_000_000
    return 0.0


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    address: str  # host:port
    log_path: Path
    environment: Mapping[str, str]  # what it was started with

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        """The largest peak of any process in the tree (a worker, when there are several)."""
        return max(peak_rss_mb(each) for each in (self.pid, *_descendants(self.pid)))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} server exited with code {self.process.returncode}:\n"
                + self.log_tail()
            )

    async def stop(self, grace_seconds: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5.0)


def _launch(
    name: str,
    args: list[str],
    env: Mapping[str, str],
    cwd: Path,
    address: str,
    log_path: Path,
    cpus: frozenset[int] | None = None,
) -> ServerProcess:
    log: IO[bytes] = log_path.open("ab")
    try:
        process = subprocess.Popen(
            [PYTHON, *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the driver only
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
    finally:
        log.close()
    return ServerProcess(name, process, address, log_path, dict(env))


async def _wait_until(server: ServerProcess, probe: Any, limit_seconds: float) -> None:
    """Retry `await probe(channel)` until it returns true, the server dies, or time is up."""
    deadline = time.monotonic() + limit_seconds
    async with grpc.aio.insecure_channel(server.address) as channel:
        while True:
            server.check_alive()
            try:
                if await probe(channel):
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server.name} server not ready:\n{server.log_tail()}")
            await asyncio.sleep(0.1)


async def _health_serving(channel: grpc.aio.Channel) -> bool:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub omits Check
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def _echoes(channel: grpc.aio.Channel) -> bool:
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        BARE_METHOD, request_serializer=None, response_deserializer=None
    )
    return bool(await echo(b"ping", timeout=1.0) == b"ping")


def _clean_environment() -> dict[str, str]:
    """This process's environment without any `KEYHOLD_*` setting the caller may have."""
    return {key: value for key, value in os.environ.items() if not key.startswith("KEYHOLD_")}


@asynccontextmanager
async def keyhold_server(
    data_dir: Path,
    key_encryption_keys: str,
    database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    cpus: frozenset[int] | None = None,
) -> AsyncIterator[ServerProcess]:
    """`keyhold serve` on a free loopback port; SQLite in `data_dir` unless `database_url`."""
    address = f"127.0.0.1:{free_port()}"
    env = _clean_environment()
    env.update(
        {
            "KEYHOLD_LISTEN_ADDRESS": address,
            # The OAuth 2.0 / OIDC endpoints, as `keyhold serve` runs them by default.
            "KEYHOLD_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "KEYHOLD_DATA_DIR": str(data_dir),
            "KEYHOLD_KEY_ENCRYPTION_KEYS": key_encryption_keys,
            "KEYHOLD_RATE_LIMITS_ENABLED": "false",
            # Every password check in flight holds a lockout reservation on its peer: the
            # load's one loopback address stands for many clients' addresses.
            "KEYHOLD_LOCKOUT_PEER_THRESHOLD": "10000",
            # As in production: one JSON line per RPC (to the log file in the data dir).
            "KEYHOLD_LOG_LEVEL": "info",
            "KEYHOLD_LOG_FORMAT": "json",
            "KEYHOLD_MIGRATE_ON_START": "true",  # also for PostgreSQL: a fresh database
            "KEYHOLD_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    if database_url is not None:
        env["KEYHOLD_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    # cwd = data_dir: no `.env` file from the checkout is read.
    server = _launch(
        "keyhold",
        ["-m", "keyhold.cli", "serve"],
        env,
        data_dir,
        address,
        data_dir / "server.log",
        cpus,
    )
    try:
        await _wait_until(server, _health_serving, _START_TIMEOUT)
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def bare_server(
    log_dir: Path,
    cpus: frozenset[int] | None = None,
    event_loop: str = "asyncio",
    grpc_experiments: str = "",
    name: str = "bare",
) -> AsyncIterator[ServerProcess]:
    """`bench/bare_server.py` on a free loopback port, on the named event loop, with
    gRPC's defaults unless `grpc_experiments` (`GRPC_EXPERIMENTS`) says otherwise."""
    address = f"127.0.0.1:{free_port()}"
    env = {key: value for key, value in _clean_environment().items() if key != VARIABLE}
    if grpc_experiments:
        env[VARIABLE] = grpc_experiments
    server = _launch(
        name,
        ["-m", "bench.bare_server", "--address", address, "--event-loop", event_loop],
        env,
        REPO,
        address,
        log_dir / f"{name}-server.log",
        cpus,
    )
    try:
        await _wait_until(server, _echoes, _START_TIMEOUT)
        yield server
    finally:
        await server.stop()
