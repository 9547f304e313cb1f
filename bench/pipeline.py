"""Keyhold's own CPU per cheap RPC: WhoAmI's wrapped handler called in-process.

    python -m bench pipeline [--calls 20000] [--repeats 5] [--log-level warning]
                             [--log-format json] [--metrics]

The policy wrapper (request id, authentication with the verified-token cache, session
check, authorization, completion log and metrics), then the handler, called with a fake
servicer context: no gRPC, no network, no other process. What `rpc` measures end to end
moves from run to run on a shared machine; this isolates what Keyhold's Python adds, and
is steadier (docs/benchmarks.md). The log goes to /dev/null through the real
configuration (`--log-level info` writes one JSON line per call). Best of `--repeats`
runs of `--calls` calls, process CPU time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import grpc
from prometheus_client import CollectorRegistry

from keyhold.adapters.telemetry.prometheus import RpcMetrics
from keyhold.api.interceptor import Handler, PolicyInterceptor
from keyhold.api.policy import load_policies
from keyhold.api.servicers.identity import IdentityServicer
from keyhold.domain.call import CallContext, set_current_call
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.log_config import configure_logging
from keyhold.server import build_server
from keyhold.settings import Settings
from keyhold.wiring.grpc_api import SERVICES

WHOAMI = "/keyhold.identity.v1.IdentityService/WhoAmI"
PASSWORD = "correct horse battery staple"


class _Context:
    """What the pipeline asks of grpc.aio's servicer context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"insecure"]}

    def set_trailing_metadata(self, metadata: object) -> None:
        return None

    def code(self) -> None:
        return None

    async def abort(self, *args: object) -> None:
        raise RuntimeError(f"aborted: {args}")


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    parser.add_argument("--log-format", default="json", choices=["json", "console"])
    parser.add_argument("--metrics", action="store_true", help="count RPCs in Prometheus")
    args = parser.parse_args(argv)
    devnull = open(os.devnull, "wb")  # noqa: ASYNC230, SIM115 - for the whole run
    configure_logging(args.log_format, args.log_level, output=devnull)
    tmp = Path(tempfile.mkdtemp(prefix="keyhold-bench-pipeline-"))
    settings = Settings(
        _env_file=None,
        data_dir=tmp,
        migrate_on_start=True,
        rate_limits_enabled=False,
        argon2_memory_kib=7 * 1024,
        argon2_time_cost=1,
    )
    app = await build_server(settings)
    try:
        app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
        set_current_call(CallContext(peer="ipv4:127.0.0.1:1"))
        await app.identity.users.create("bench@example.com", PASSWORD, "Bench")
        login = await app.identity.sessions.login("bench@example.com", PASSWORD, "bench")
        interceptor = PolicyInterceptor(
            load_policies(SERVICES),
            app.api.admission,
            metrics=RpcMetrics(CollectorRegistry()) if args.metrics else None,
        )
        handler: Handler = grpc.unary_unary_rpc_method_handler(
            IdentityServicer(app.identity).WhoAmI
        )
        call = interceptor.wrap(WHOAMI, handler).unary_unary
        assert call is not None
        fake = _Context(
            (
                ("authorization", f"Bearer {login.access_token.token}"),
                ("user-agent", "grpc-python-asyncio/1.85.1 grpc-c/51.0.0 (linux; chttp2)"),
            )
        )
        context = cast(grpc.ServicerContext, fake)  # only what the pipeline asks of one
        request = pb.WhoAmIRequest()
        for _ in range(min(args.calls, 2_000)):  # warm the caches
            await call(request, context)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.process_time()
            for _ in range(args.calls):
                await call(request, context)
            best = min(best, time.process_time() - started)
    finally:
        await app.platform.database.dispose()
        await app.providers.oauth.close()
        app.identity.hasher.close()
        devnull.close()
        shutil.rmtree(tmp, ignore_errors=True)
    microseconds = best / args.calls * 1e6
    print(
        f"WhoAmI through the pipeline: {microseconds:.2f} µs of CPU per call "
        f"(log {args.log_level} {args.log_format}, metrics {'on' if args.metrics else 'off'})"
    )
    return {
        "microseconds_per_call": round(microseconds, 2),
        "log_level": args.log_level,
        "log_format": args.log_format,
        "metrics": args.metrics,
    }
