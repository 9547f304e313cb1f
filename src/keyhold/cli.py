"""`keyhold`: serve, migrate, and probe health."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from keyhold.grpc_transport import select_transport
from keyhold.log_config import configure_logging
from keyhold.settings import Settings

if TYPE_CHECKING:
    import grpc
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyhold.server import KeyholdServer

# grpc is imported inside the commands: `serve` chooses gRPC's transport first.


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    select_transport(settings.grpc_transport)
    from keyhold.api.tls import TlsConfigurationError
    from keyhold.event_loop import run as run_on_loop
    from keyhold.server import serve
    from keyhold.workers import WorkerConfigError

    if args.address:
        settings = settings.model_copy(update={"listen_address": args.address})
    workers = args.workers or settings.workers
    try:
        if workers > 1:
            from keyhold.workers import supervise

            return supervise(settings, workers)
        run_on_loop(serve(settings), settings.event_loop)
    except (TlsConfigurationError, WorkerConfigError) as error:
        print(f"keyhold: {error}", file=sys.stderr)
        return 2
    return 0


def _engine(settings: Settings) -> AsyncEngine:
    from keyhold.wiring.platform import database_engine

    return database_engine(settings)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.adapters.persistence.migrate import current_revision, migrate

    async def run() -> str | None:
        engine = _engine(settings)
        try:
            await migrate(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    print(f"database at revision {asyncio.run(run())}")
    return 0


def _health_channel(settings: Settings, address: str) -> grpc.Channel:
    """Plaintext, or TLS (with a client certificate if configured) when the server has TLS."""
    import grpc

    if settings.tls_cert_file is None:
        return grpc.insecure_channel(address)
    from keyhold.client.tls import tls_channel_credentials

    credentials = tls_channel_credentials(
        settings.tls_health_ca_file,
        settings.tls_health_client_cert_file,
        settings.tls_health_client_key_file,
    )
    options = []
    if settings.tls_health_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_health_server_name))
    return grpc.secure_channel(address, credentials, options)


def _health(settings: Settings, args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or settings.listen_address
    try:
        with _health_channel(settings, address) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub omits Check
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{address}: {error.code().name} {error.details() or ''}".rstrip(), file=sys.stderr)
        return 1
    except OSError as error:  # an unreadable TLS file
        print(f"{address}: {error}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
    from keyhold.adapters.persistence.database import Database
    from keyhold.application.audit.trail import ChainReport, verify_trail

    async def run() -> ChainReport:
        database = Database(_engine(settings))
        try:
            return await verify_trail(SqlAuditTrail(database), args.start, args.end)
        finally:
            await database.dispose()

    report = asyncio.run(run())
    print(
        f"audit chain {'OK' if report.ok else 'BROKEN'}: checked {report.checked_count} events, "
        f"head {report.head_sequence} {report.head_hash.hex() or '-'}"
        + ("" if report.ok else f", first bad sequence {report.first_bad_sequence}")
    )
    return 0 if report.ok else 2


def _audit_prune(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
    from keyhold.adapters.persistence.database import Database

    cutoff = datetime.now(UTC) - timedelta(days=settings.audit_retention_days)

    async def run() -> int:
        database = Database(_engine(settings))
        try:
            return await SqlAuditTrail(database).prune_before(cutoff)
        finally:
            await database.dispose()

    print(f"pruned {asyncio.run(run())} audit events older than {cutoff.isoformat()}")
    return 0


def _offline(settings: Settings, work: Callable[[KeyholdServer], Awaitable[str]]) -> str:
    """Run `work` against a built (not serving) server as the SYSTEM principal."""
    from keyhold.domain.call import CallContext, set_current_call
    from keyhold.domain.principal import SYSTEM
    from keyhold.server import build_server

    async def run() -> str:
        app = await build_server(settings)
        try:
            app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
            set_current_call(CallContext(principal=SYSTEM, peer="local", user_agent="keyhold-cli"))
            return await work(app)
        finally:
            await app.platform.database.dispose()
            app.identity.hasher.close()

    return asyncio.run(run())


def _keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def rotate(app: KeyholdServer) -> str:
        return await app.identity.rotation.rotate()

    print(f"new signing key: {_offline(settings, rotate)}")
    return 0


def _rotate_vault(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.domain.errors import DomainError

    async def reseal(app: KeyholdServer) -> str:
        return str(await app.vault.reseal())

    try:
        print(f"re-encrypted {_offline(settings, reseal)} rows under the newest key")
    except DomainError as error:
        where = ", ".join(f"{key} {value}" for key, value in error.metadata.items())
        print(
            f"{error.reason}: {error.message} ({where}); nothing was re-encrypted", file=sys.stderr
        )
        return 2
    return 0


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from keyhold.domain.errors import DomainError

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2

    async def create(app: KeyholdServer) -> str:
        user = await app.identity.users.create(
            args.email, password, args.display_name, roles=frozenset({"admin", "user"})
        )
        return user.name

    try:
        print(f"created admin {_offline(settings, create)}")
    except DomainError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        for violation in getattr(error, "violations", ()):
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 2
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyhold", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--address", help="host:port to listen on (KEYHOLD_LISTEN_ADDRESS)")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="server processes sharing the port (KEYHOLD_WORKERS)",
    )
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=_migrate)
    health = commands.add_parser("health", help="exit 0 if the server is SERVING, 1 otherwise")
    health.add_argument("--address", help="host:port of the server (KEYHOLD_LISTEN_ADDRESS)")
    health.add_argument("--service", default="", help="a service name; default: the server")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    health.set_defaults(run=_health)
    audit = commands.add_parser("audit", help="audit trail maintenance").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="recompute the hash chain; exit 2 if broken")
    verify.add_argument("--start", type=int, default=0, help="first sequence (default: oldest)")
    verify.add_argument("--end", type=int, default=0, help="last sequence (default: head)")
    verify.set_defaults(run=_audit_verify)
    prune = audit.add_parser("prune", help="delete records older than KEYHOLD_AUDIT_RETENTION_DAYS")
    prune.set_defaults(run=_audit_prune)
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("rotate", help="make a new signing key the signer").set_defaults(
        run=_keys_rotate
    )
    keys.add_parser(
        "rotate-vault",
        help="re-encrypt every sealed secret under the newest KEYHOLD_KEY_ENCRYPTION_KEYS key",
    ).set_defaults(run=_rotate_vault)
    users = commands.add_parser("users", help="users").add_subparsers(
        dest="users_command", required=True
    )
    admin = users.add_parser("create-admin", help="create a user with the admin role")
    admin.add_argument("--email", required=True)
    admin.add_argument("--display-name", default="Administrator")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    admin.set_defaults(run=_create_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    code: int = args.run(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
