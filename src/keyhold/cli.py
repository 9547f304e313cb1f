"""`keyhold`: serve, migrate, and probe health."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.log_config import configure_logging
from keyhold.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.server import serve

    if args.address:
        settings = settings.model_copy(update={"listen_address": args.address})
    asyncio.run(serve(settings))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.adapters.persistence.engine import create_engine
    from keyhold.adapters.persistence.migrate import current_revision, migrate

    async def run() -> str | None:
        engine = create_engine(settings)
        try:
            await migrate(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    print(f"database at revision {asyncio.run(run())}")
    return 0


def _health(settings: Settings, args: argparse.Namespace) -> int:
    address = args.address or settings.listen_address
    try:
        with grpc.insecure_channel(address) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub omits Check
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{address}: {error.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyhold", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--address", help="host:port to listen on (KEYHOLD_LISTEN_ADDRESS)")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=_migrate)
    health = commands.add_parser("health", help="exit 0 if the server is SERVING, 1 otherwise")
    health.add_argument("--address", help="host:port of the server (KEYHOLD_LISTEN_ADDRESS)")
    health.add_argument("--service", default="", help="a service name; default: the server")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    health.set_defaults(run=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    code: int = args.run(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
