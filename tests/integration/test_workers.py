"""`keyhold serve --workers N`: N processes share one port, each serves connections, a
dead worker is replaced, SIGTERM stops them all; SQLite refuses several workers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.settings import Settings
from keyhold.workers import metrics_address_of
from tests.support.cli import free_port
from tests.support.databases import postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

START_TIMEOUT = 60.0


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _established_on(port: int, pid: int) -> int:
    """Connections accepted on `port` that process `pid` holds."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC may accept on a v6 socket
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                count += 1
    return count


def _environment(data_dir: Path, database_url: str | None, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEYHOLD_")}
    env.update(
        {
            "KEYHOLD_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "KEYHOLD_HTTP_ADDRESS": "",
            "KEYHOLD_DATA_DIR": str(data_dir),
            "KEYHOLD_KEY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "KEYHOLD_MIGRATE_ON_START": "true",
            "KEYHOLD_SHUTDOWN_GRACE_SECONDS": "1",
            "KEYHOLD_LOG_FORMAT": "json",
        }
    )
    if database_url:
        env["KEYHOLD_DATABASE_URL"] = database_url
    return env


def _serve(env: dict[str, str], data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    with (data_dir / "server.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "keyhold.cli", "serve", *args],
            env=env,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def _wait_for_workers(process: subprocess.Popen[bytes], count: int) -> list[int]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, f"supervisor exited with {process.returncode}"
        workers = _children(process.pid)
        if len(workers) == count:
            return workers
        assert time.monotonic() < deadline, f"workers: {workers}"
        await asyncio.sleep(0.1)


async def _wait_serving(address: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            assert time.monotonic() < deadline, "never SERVING"
            await asyncio.sleep(0.1)


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    async with postgres_database() as url:
        process = _serve(_environment(tmp_path, url, port), tmp_path, "--workers", "2")
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()  # the workers follow it (PR_SET_PDEATHSIG)
                await asyncio.to_thread(process.wait, 10)


async def test_workers_share_the_port_and_each_serves_connections(
    supervisor: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = supervisor
    workers = await _wait_for_workers(process, 2)
    address = f"127.0.0.1:{port}"
    await _wait_serving(address)
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, own_connection) for _ in range(24)]
    try:
        for channel in channels:  # each channel is one TCP connection, spread by the kernel
            keys = await pb_grpc.IdentityServiceStub(channel).GetJwks(
                pb.GetJwksRequest(), timeout=10
            )
            assert keys.keys
        held = {pid: _established_on(port, pid) for pid in workers}
        assert sum(held.values()) == len(channels), held
        assert all(count > 0 for count in held.values()), held
    finally:
        for channel in channels:
            await channel.close()

    process.send_signal(signal.SIGHUP)  # passed on: each worker rereads its TLS files
    await asyncio.sleep(1.0)
    assert sorted(_children(process.pid)) == sorted(workers)
    await _wait_serving(address)


async def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
    supervisor: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = supervisor
    first, second = await _wait_for_workers(process, 2)
    await _wait_serving(f"127.0.0.1:{port}")
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        workers = _children(process.pid)
        if len(workers) == 2 and first not in workers:
            break
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.1)
    assert second in workers
    await _wait_serving(f"127.0.0.1:{port}")

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 20) == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)  # noqa: ASYNC240


async def test_workers_die_with_a_killed_supervisor(
    supervisor: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, _port = supervisor
    workers = await _wait_for_workers(process, 2)
    process.kill()
    await asyncio.to_thread(process.wait, 10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "orphaned workers kept running"
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_each_worker_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, metrics_address="127.0.0.1:9464")
    assert [metrics_address_of(settings, index) for index in range(3)] == [
        "127.0.0.1:9464",
        "127.0.0.1:9465",
        "127.0.0.1:9466",
    ]
    unset = Settings(_env_file=None, data_dir=tmp_path)
    assert metrics_address_of(unset, 1) is None


async def test_several_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    process = _serve(_environment(tmp_path, None, free_port()), tmp_path, "--workers", "2")
    assert await asyncio.to_thread(process.wait, 30) == 2
    assert "need PostgreSQL" in (tmp_path / "server.log").read_text()
