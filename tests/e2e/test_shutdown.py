"""Graceful shutdown: health goes NOT_SERVING, new calls are refused, in-flight calls
finish within the grace period; `keyhold serve` does this on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.adapters.persistence.migrate import head_revision
from keyhold.api.servicers.identity import IdentityServicer
from keyhold.grpc_transport import EXPERIMENTS
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import build_server
from tests.support.cli import free_port, run_cli
from tests.support.servers import settings_for


async def test_in_flight_calls_finish_and_new_ones_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = asyncio.Event()
    original = IdentityServicer.GetJwks

    async def slow_jwks(self: IdentityServicer, request: Any, context: Any) -> Any:
        entered.set()
        await asyncio.sleep(1.0)
        return await original(self, request, context)

    monkeypatch.setattr(IdentityServicer, "GetJwks", slow_jwks)
    app = await build_server(settings_for(tmp_path))
    port = await app.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        identity = pb_grpc.IdentityServiceStub(channel)
        in_flight = asyncio.ensure_future(identity.GetJwks(pb.GetJwksRequest(), timeout=10))
        await entered.wait()
        stopping = asyncio.ensure_future(app.stop(grace=5))
        await asyncio.sleep(0.2)
        assert not app.platform.health.serving
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.GetJwks(pb.GetJwksRequest(), timeout=2)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (await in_flight).keys  # finished normally despite the shutdown
        await stopping


def _thread_policies(pid: int) -> dict[int, int]:
    policies = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # the thread ended since the listing
            policies[int(name)] = os.sched_getscheduler(int(name))
    return policies


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "runs_on", "experiments"),
    [
        ({}, "uvloop", EXPERIMENTS["posix"]),
        ({"KEYHOLD_EVENT_LOOP": "asyncio"}, "asyncio", EXPERIMENTS["posix"]),
        ({"KEYHOLD_GRPC_TRANSPORT": "event-engine"}, "uvloop", ""),
        ({"GRPC_EXPERIMENTS": "-event_engine_listener"}, "uvloop", "-event_engine_listener"),
    ],
    ids=["default", "asyncio", "event-engine", "operator-experiments"],
)
async def test_cli_serve_health_and_sigterm(
    tmp_path: Path, settings: dict[str, str], runs_on: str, experiments: str
) -> None:
    address, http_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KEYHOLD_") and key != "GRPC_EXPERIMENTS"
    }
    env = {
        **inherited,
        "KEYHOLD_DATA_DIR": str(tmp_path / "data"),
        "KEYHOLD_LISTEN_ADDRESS": address,
        "KEYHOLD_HTTP_ADDRESS": http_address,
        "KEYHOLD_LOG_FORMAT": "json",
        **settings,
    }
    code, out = await run_cli("health", "--timeout", "1", env=env)
    assert code == 1, out  # nothing is serving yet

    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keyhold.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            code, out = await run_cli("health", "--timeout", "1", env=env)
            if code == 0:
                break
            await asyncio.sleep(0.2)
        assert code == 0, out
        assert "SERVING" in out
        code, out = await run_cli(
            "health", "--service", "keyhold.identity.v1.IdentityService", env=env
        )
        assert code == 0, out
        async with httpx.AsyncClient(base_url=f"http://{http_address}") as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
        # Every thread is scheduled as the OS started it, as in any Python process.
        assert set(_thread_policies(server.pid).values()) == {os.SCHED_OTHER}
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(server.communicate(), timeout=20)
    assert server.returncode == 0
    # JSON lines: gRPC and the HTTP server logged nothing beside structlog.
    lines = [json.loads(line) for line in err.splitlines()]
    assert "shutting_down" in [line["event"] for line in lines]
    serving = [line for line in lines if line["event"] == "serving"]
    assert [line["event_loop"] for line in serving] == [runs_on]
    assert [line["grpc_experiments"] for line in serving] == [experiments]
    assert (tmp_path / "data" / "keyhold.db").exists()


@pytest.mark.slow
async def test_cli_migrate(tmp_path: Path) -> None:
    env = {**os.environ, "KEYHOLD_DATA_DIR": str(tmp_path / "data")}
    code, out = await run_cli("migrate", env=env)
    assert code == 0, out
    assert f"database at revision {head_revision()}" in out


async def test_health_probe_against_a_not_serving_server(tmp_path: Path) -> None:
    app = await build_server(settings_for(tmp_path))
    port = await app.start()
    try:
        await app.platform.monitor.stop()
        await app.platform.health.set_serving(False)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
        env = {
            **os.environ,
            "KEYHOLD_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "KEYHOLD_HTTP_ADDRESS": "",
        }
        code, out = await run_cli("health", env=env)
        assert code == 1
        assert "NOT_SERVING" in out
    finally:
        await app.stop(grace=0)
