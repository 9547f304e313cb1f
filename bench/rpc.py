"""RPC throughput, latency and server CPU per call, against a real server process.

    python -m bench rpc [--scenarios bare,whoami,jwks] [--seconds 5] [--warmup 2]
                        [--channels 4] [--concurrency 8] [--processes 1]
                        [--database-url URL | --postgres] [--json PATH]
                        [--server-env KEYHOLD_X=VALUE ...]

The server under test runs in its own process (`keyhold serve`, or the bare grpc.aio
baseline for `bare`); the closed-loop load runs in other processes (`bench.loadgen`).
Server CPU is read from /proc at the measured window's edges, so "calls per server
CPU-second" does not depend on how the two cores were shared with the load generator.
The headline is whoami's calls per server CPU-second over bare's: the fraction of gRPC
Python's own per-call efficiency that Keyhold keeps on a cheap authenticated RPC. With
`login` and `hash-only` both run, login's calls per server CPU-second over hash-only's
(the server's own password hasher alone, at the same parameters and concurrency, in a
process placed like the server) is the share of a login's CPU that is its password check.

A scenario is one async function registered with `@scenario(...)`: it gets a `Target`
(the running server's address, a channel, generated stubs, token minting) and returns
the `CallSpec` to load it with, preparing whatever state it needs through the RPCs first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import asyncpg
import grpc

from bench.hash_only import hash_only_processes
from bench.http_load import HttpSpec, run_http_load
from bench.loadgen import PERCENTILES, CallSpec, LoadConfig, LoadResult, percentile, run_load
from bench.mixed_load import MixConfig, MixEntry, start_mix
from bench.serve_under_test import (
    BARE_METHOD,
    ServerProcess,
    bare_server,
    keyhold_server,
    new_key_encryption_key,
)
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.grpc_transport import DEFAULT_TRANSPORT, VARIABLE, GrpcTransport, select_transport
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer, build_server
from keyhold.settings import Settings

OWN_JSON_OPTION = True  # `--json PATH` is ours, not the dispatcher's flag
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
IDENTITY = "/keyhold.identity.v1.IdentityService/"
AUDIT = "/keyhold.audit.v1.AuditService/"
PROVIDER = "/keyhold.provider.v1.ProviderService/"

ServerKind = Literal["bare", "bare-uvloop", "bare-tuned", "keyhold"]
BASELINES: tuple[ServerKind, ...] = ("bare", "bare-uvloop", "bare-tuned")


@dataclass
class Target:
    """What a scenario may use to prepare its load against the running server."""

    kind: ServerKind
    address: str
    channel: grpc.aio.Channel
    app: KeyholdServer | None = None  # built, never started: its key ring mints tokens

    @property
    def identity(self) -> Any:  # the stub's methods are untyped at runtime
        return identity_grpc.IdentityServiceStub(self.channel)

    def _tokens(self) -> KeyholdServer:
        if self.app is None:
            raise RuntimeError("tokens can only be minted for a Keyhold server")
        return self.app

    def user_token(
        self,
        subject: str = "users/bench",
        roles: Iterable[str] = ("user",),
        session_id: str = "bench",
    ) -> str:
        issued = self._tokens().identity.access_tokens.issue(
            subject=subject, roles=roles, session_id=session_id
        )
        return issued.token

    def service_token(
        self, subject: str = "service-accounts/bench", scopes: Iterable[str] = ()
    ) -> str:
        return self._tokens().identity.access_tokens.issue(subject=subject, scopes=scopes).token


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


Prepare = Callable[[Target], Awaitable[CallSpec]]


Measure = Callable[[Target, ServerProcess, "LoadConfig"], Awaitable[list["Row"]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    server: ServerKind
    summary: str
    prepare: Prepare | None = None  # one closed-loop load of one CallSpec
    measure: Measure | None = None  # or a measurement of its own making


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, server: ServerKind, summary: str) -> Callable[[Prepare], Prepare]:
    def register(prepare: Prepare) -> Prepare:
        SCENARIOS[name] = Scenario(name, server, summary, prepare=prepare)
        return prepare

    return register


def measurement(name: str, server: ServerKind, summary: str) -> Callable[[Measure], Measure]:
    def register(measure: Measure) -> Measure:
        SCENARIOS[name] = Scenario(name, server, summary, measure=measure)
        return measure

    return register


async def bare_echo(target: Target) -> CallSpec:
    return CallSpec.of(BARE_METHOD, b"")


for _kind, _summary in (
    ("bare", "baseline: raw-bytes echo on a grpc.aio server without interceptors"),
    ("bare-uvloop", "the bare baseline on uvloop, the event loop keyhold serve runs on"),
    (
        "bare-tuned",
        "the bare baseline as keyhold serve runs gRPC: on uvloop, with its gRPC transport "
        "(KEYHOLD_GRPC_TRANSPORT): the like-for-like floor for Keyhold",
    ),
):
    scenario(_kind, cast(ServerKind, _kind), _summary)(bare_echo)


def keyhold_grpc_experiments(environment: Mapping[str, str]) -> str:
    """The `GRPC_EXPERIMENTS` that `keyhold serve` runs with, given the settings it is
    started with; it inherits this process's `GRPC_EXPERIMENTS`, but no `KEYHOLD_*`."""
    given = {**{k: v for k, v in os.environ.items() if k == VARIABLE}, **environment}
    transport = cast(GrpcTransport, given.get("KEYHOLD_GRPC_TRANSPORT", DEFAULT_TRANSPORT))
    return select_transport(transport, given, loaded={})


BENCH_PASSWORD = "benchmark passphrase 0"
# Keycloak's default Argon2id profile, for comparison with its published sizing.
ARGON2_ENV = {
    "KEYHOLD_ARGON2_MEMORY_KIB": str(7 * 1024),
    "KEYHOLD_ARGON2_TIME_COST": "5",
    "KEYHOLD_ARGON2_PARALLELISM": "1",
}


async def _bench_user(target: Target) -> str:
    """A registered user (through CreateUser) for the scenarios that log in."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    await target.identity.CreateUser(
        identity_pb.CreateUserRequest(email=email, password=BENCH_PASSWORD, display_name="B"),
        timeout=10.0,
    )
    return email


@scenario(
    "bare-bearer",
    "bare",
    "baseline with a JWT-sized authorization header: what gRPC itself charges for it",
)
async def bare_bearer(target: Target) -> CallSpec:
    header = "Bearer " + "x" * 560  # the size of a Keyhold user access token
    return CallSpec.of(BARE_METHOD, b"", [("authorization", header)])


@scenario(
    "bare-context",
    "bare",
    "bare-bearer, also reading metadata and peer and echoing a request-id trailer",
)
async def bare_context(target: Target) -> CallSpec:
    header = "Bearer " + "x" * 560
    method = BARE_METHOD.rsplit("/", 1)[0] + "/EchoWithContext"
    return CallSpec.of(method, b"", [("authorization", header)])


@scenario("whoami", "keyhold", "IdentityService/WhoAmI with a logged-in user's access token")
async def whoami(target: Target) -> CallSpec:
    email = await _bench_user(target)
    session = await target.identity.CreateSession(
        identity_pb.CreateSessionRequest(email=email, password=BENCH_PASSWORD), timeout=10.0
    )
    metadata = bearer(session.access_token)
    request = identity_pb.WhoAmIRequest()
    response = await target.identity.WhoAmI(request, metadata=metadata, timeout=5.0)
    assert response.session == session.session.name, response  # the token is accepted
    return CallSpec.of(IDENTITY + "WhoAmI", request.SerializeToString(), metadata)


LOGIN_ACCOUNTS = 64


@scenario("login", "keyhold", "IdentityService/CreateSession, Argon2id m=7 MiB t=5 p=1")
async def login(target: Target) -> CallSpec:
    """Logins to 64 accounts in turn, as many users would log in: the lockout lets a
    few checks of one account from one address be evaluated at a time, not dozens."""
    emails = await asyncio.gather(*(_bench_user(target) for _ in range(LOGIN_ACCOUNTS)))
    requests = [
        identity_pb.CreateSessionRequest(email=email, password=BENCH_PASSWORD).SerializeToString()
        for email in emails
    ]
    return CallSpec.of(IDENTITY + "CreateSession", requests, timeout_seconds=30)


@measurement(
    "hash-only",
    "keyhold",
    "the server's Argon2Hasher alone, verifying at the login scenario's concurrency, in a "
    "process placed and configured like the server: the login scenario's yardstick",
)
async def hash_only(target: Target, server: ServerProcess, config: LoadConfig) -> list[Row]:
    environment = server.environment
    results = await hash_only_processes(
        environment,
        frozenset(os.sched_getaffinity(server.pid)),
        processes=int(environment.get("KEYHOLD_WORKERS", "1")),
        concurrency=config.processes * config.channels * config.concurrency,
        warmup=config.warmup_seconds,
        seconds=config.seconds,
    )
    calls = sum(result.calls for result in results)
    cpu = sum(result.cpu_seconds for result in results)
    seconds = max(result.seconds for result in results)
    latencies = sorted(latency for result in results for latency in result.latencies)
    row = Row(
        scenario="hash-only",
        calls_per_second=round(calls / seconds, 1),
        calls_per_server_cpu_second=round(calls / cpu, 1) if cpu else None,
        server_cores=round(cpu / seconds, 2),
        load_cores=0.0,
        latency_ms={f"p{p:g}": round(percentile(latencies, p) * 1000.0, 3) for p in PERCENTILES},
        errors={},
        calls=calls,
        warmup_calls=0,
        server_cpu_seconds=round(cpu, 2),
        server_peak_rss_mb=round(max(result.peak_rss_mb for result in results), 1),
    )
    _print_row(row)
    return [row]


@scenario("service-token", "keyhold", "IdentityService/CreateServiceToken (client credentials)")
async def service_token(target: Target) -> CallSpec:
    app = target._tokens()
    account, secret = await app.identity.service_accounts.create("bench", ["audit.read"])
    request = identity_pb.CreateServiceTokenRequest(
        client_id=account.client_id, client_secret=secret
    )
    check = await target.identity.CreateServiceToken(request, timeout=10.0)
    assert check.access_token, check
    return CallSpec.of(IDENTITY + "CreateServiceToken", request.SerializeToString())


@scenario(
    "service-token-audience",
    "keyhold",
    "CreateServiceToken (client credentials) for another API resource's audience, with "
    "the scopes granted there: the call a fleet's services make",
)
async def service_token_audience(target: Target) -> CallSpec:
    from keyhold.application.identity.api_resources import Definition

    app = target._tokens()
    suffix = secrets.token_hex(3)
    audience = f"billing-{suffix}.internal"
    resource = await app.identity.api_resources.create(
        f"billing-{suffix}", Definition("Billing", audience, {"billing.read": "read"}, {})
    )
    account, secret = await app.identity.service_accounts.create("bench-fleet", [])
    await app.identity.api_resources.grant_scopes(account.name, resource.name, ["billing.read"])
    request = identity_pb.CreateServiceTokenRequest(
        client_id=account.client_id, client_secret=secret, audience=audience
    )
    check = await target.identity.CreateServiceToken(request, timeout=10.0)
    assert list(check.scopes) == ["billing.read"], check
    return CallSpec.of(IDENTITY + "CreateServiceToken", request.SerializeToString())


async def _http_measure(
    name: str, spec: HttpSpec, server: ServerProcess, config: LoadConfig
) -> list[Row]:
    """`spec` over HTTP/1.1 keep-alive connections from one load process, with as many
    requests outstanding as the gRPC scenarios keep."""
    base = "http://" + server.environment["KEYHOLD_HTTP_ADDRESS"]
    result, cpu = await run_http_load(
        base,
        spec,
        concurrency=config.processes * config.channels * config.concurrency,
        warmup_seconds=config.warmup_seconds,
        seconds=config.seconds,
        cpus=config.cpus,
        server_cpu_seconds=server.cpu_seconds,
    )
    latencies = sorted(result.latencies)
    refused = {f"HTTP {status}": n for status, n in result.statuses.items() if status != 200}
    row = Row(
        scenario=name,
        calls_per_second=round(result.calls / config.seconds, 1),
        calls_per_server_cpu_second=round(result.calls / cpu, 1) if cpu else None,
        server_cores=round(cpu / config.seconds, 2),
        load_cores=round(result.client_cpu_seconds / (config.warmup_seconds + config.seconds), 2),
        latency_ms={f"p{p:g}": round(percentile(latencies, p) * 1000.0, 3) for p in PERCENTILES},
        errors={**refused, **dict(result.errors)},
        calls=result.calls,
        warmup_calls=result.warmup_calls,
        server_cpu_seconds=round(cpu, 2),
        server_peak_rss_mb=round(server.peak_rss_mb(), 1),
    )
    _print_row(row)
    return [row]


@measurement(
    "http-token",
    "keyhold",
    "POST /oauth2/token, client credentials by client_secret_basic: CreateServiceToken's "
    "twin over HTTP",
)
async def http_token(target: Target, server: ServerProcess, config: LoadConfig) -> list[Row]:
    import base64

    app = target._tokens()
    account, secret = await app.identity.service_accounts.create("bench-http", ["audit.read"])
    credentials = base64.b64encode(f"{account.client_id}:{secret}".encode()).decode()
    spec = HttpSpec(
        "POST",
        "/oauth2/token",
        (b"grant_type=client_credentials",),
        (
            ("authorization", f"Basic {credentials}"),
            ("content-type", "application/x-www-form-urlencoded"),
        ),
    )
    return await _http_measure("http-token", spec, server, config)


@measurement("http-jwks", "keyhold", "GET /.well-known/jwks.json: GetJwks's twin over HTTP")
async def http_jwks(target: Target, server: ServerProcess, config: LoadConfig) -> list[Row]:
    return await _http_measure(
        "http-jwks", HttpSpec("GET", "/.well-known/jwks.json"), server, config
    )


INTROSPECTED_TOKENS = 20_000


@scenario("introspect", "keyhold", "IdentityService/IntrospectToken, a different token each call")
async def introspect(target: Target) -> CallSpec:
    """Distinct user tokens (all of one live session), so every call verifies a
    signature: the uncached path."""
    app = target._tokens()
    email = await _bench_user(target)
    session = await target.identity.CreateSession(
        identity_pb.CreateSessionRequest(email=email, password=BENCH_PASSWORD), timeout=10.0
    )
    session_id = session.session.name.removeprefix("sessions/")
    subject = session.session.user
    account, secret = await app.identity.service_accounts.create("bench", ["identity.introspect"])
    caller = await app.identity.service_accounts.issue_token(account.client_id, secret, [])
    metadata = bearer(caller.token.token)
    tokens = [
        app.identity.access_tokens.issue(subject=subject, session_id=session_id).token
        for _ in range(INTROSPECTED_TOKENS)
    ]
    check = await target.identity.IntrospectToken(
        identity_pb.IntrospectTokenRequest(token=tokens[0]), metadata=metadata, timeout=10.0
    )
    assert check.active, check
    requests = [identity_pb.IntrospectTokenRequest(token=t).SerializeToString() for t in tokens]
    return CallSpec.of(IDENTITY + "IntrospectToken", requests, metadata)


@scenario(
    "introspect-repeat",
    "keyhold",
    "IntrospectToken, one token asked about repeatedly (the verified-claims cache)",
)
async def introspect_repeat(target: Target) -> CallSpec:
    spec = await introspect(target)
    return CallSpec.of(spec.method, spec.requests[0], spec.metadata)


ASSERTIONS = 30_000


@scenario(
    "service-token-assertion",
    "keyhold",
    "IdentityService/CreateServiceToken with a private_key_jwt client assertion (ES256), "
    "a fresh one each call: signature check and the once-only record",
)
async def service_token_assertion(target: Target) -> CallSpec:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    app = target._tokens()
    account, _ = await app.identity.service_accounts.create("bench-keyless", ["audit.read"])
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    await app.identity.account_keys.add(
        account.name, json.dumps({**public, "kid": "bench", "alg": "ES256"})
    )
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims = {"iss": account.client_id, "sub": account.client_id, "aud": app.settings.issuer}
    requests = [
        identity_pb.CreateServiceTokenRequest(
            client_id=account.client_id,
            client_assertion=jwt.encode(
                {**claims, "iat": now, "exp": now + 300, "jti": secrets.token_hex(12)},
                key,
                "ES256",
                {"kid": "bench"},
            ),
        ).SerializeToString()
        for _ in range(ASSERTIONS)
    ]
    check = await target.identity.CreateServiceToken(
        identity_pb.CreateServiceTokenRequest.FromString(requests.pop()), timeout=10.0
    )
    assert check.access_token, check
    return CallSpec.of(IDENTITY + "CreateServiceToken", requests)


EXCHANGED_TOKENS = 20_000


@scenario(
    "exchange",
    "keyhold",
    "IdentityService/ExchangeToken: a service exchanges a user's token (a different one "
    "each call) for one to call another API resource on the user's behalf",
)
async def exchange(target: Target) -> CallSpec:
    from keyhold.application.identity.api_resources import Definition

    app = target._tokens()
    resources = app.identity.api_resources
    audience = f"reports-{secrets.token_hex(3)}.internal"
    resource = await resources.create(
        audience.split(".")[0],
        Definition(
            "Reports", audience, {"reports.read": "read"}, {"viewer": frozenset({"reports.read"})}
        ),
    )
    email = await _bench_user(target)
    session = await target.identity.CreateSession(
        identity_pb.CreateSessionRequest(email=email, password=BENCH_PASSWORD), timeout=10.0
    )
    user = session.session.user
    await resources.grant_roles(user, resource.name, ["viewer"])
    front, secret = await app.identity.service_accounts.create("bench-front", [])
    await resources.set_exchange_grant(front.name, resource.name, ["reports.read"])
    caller = await app.identity.service_accounts.issue_token(front.client_id, secret, [])
    metadata = bearer(caller.token.token)
    session_id = session.session.name.removeprefix("sessions/")
    requests = [
        identity_pb.ExchangeTokenRequest(
            subject_token=app.identity.access_tokens.issue(
                subject=user, session_id=session_id
            ).token,
            audience=audience,
        ).SerializeToString()
        for _ in range(EXCHANGED_TOKENS)
    ]
    check = await target.identity.ExchangeToken(
        identity_pb.ExchangeTokenRequest.FromString(requests[0]), metadata=metadata, timeout=10.0
    )
    assert list(check.scopes) == ["reports.read"], check
    return CallSpec.of(IDENTITY + "ExchangeToken", requests, metadata)


REFRESH_TOKENS = 30_000


@scenario("refresh", "keyhold", "IdentityService/RefreshSession, one live session per call")
async def refresh(target: Target) -> CallSpec:
    """Refresh tokens are single-use, so each call needs its own: the sessions are
    written straight into the shared database (as logins would have, without paying
    for 30,000 Argon2id verifications), then one is checked through the RPC."""
    email = await _bench_user(target)
    app = target._tokens()
    tokens = await _bulk_sessions(app, email, REFRESH_TOKENS)
    check = await target.identity.RefreshSession(
        identity_pb.RefreshSessionRequest(refresh_token=tokens.pop()), timeout=10.0
    )
    assert check.access_token, check
    requests = [
        identity_pb.RefreshSessionRequest(refresh_token=token).SerializeToString()
        for token in tokens
    ]
    return CallSpec.of(IDENTITY + "RefreshSession", requests)


async def _bulk_sessions(app: KeyholdServer, email: str, count: int) -> list[str]:
    import uuid

    from keyhold.application.identity.secrets import REFRESH_TOKEN_PREFIX, new_secret
    from keyhold.domain.identity.sessions import Session

    now = dt.datetime.now(dt.UTC)
    tokens = []
    async with app.platform.unit_of_work() as uow:
        user = await uow.users.by_email(email)
        assert user is not None
        for _ in range(count):
            session = Session(
                id=uuid.uuid4().hex,
                user_id=user.id,
                user_agent="bench",
                peer="ipv4:127.0.0.1:1",
                created_at=now,
                expires_at=now + dt.timedelta(days=1),
                idle_expires_at=now + dt.timedelta(days=1),
                last_refresh_at=now,
            )
            token, token_hash = new_secret(REFRESH_TOKEN_PREFIX)
            await uow.sessions.add(session, token_hash)
            tokens.append(token)
    return tokens


async def _service_bearer(target: Target, scopes: list[str]) -> list[tuple[str, str]]:
    app = target._tokens()
    account, secret = await app.identity.service_accounts.create("bench", scopes)
    issued = await app.identity.service_accounts.issue_token(account.client_id, secret, [])
    return bearer(issued.token.token)


@scenario(
    "audit-list",
    "keyhold",
    "AuditService/ListAuditEvents, a page of 50 of the newest events (scope audit.read)",
)
async def audit_list(target: Target) -> CallSpec:
    metadata = await _service_bearer(target, ["audit.read"])
    for _ in range(30):  # at least a page of events, even when this scenario runs first
        await _bench_user(target)
    request = audit_pb.ListAuditEventsRequest(page_size=50)
    stub: Any = audit_grpc.AuditServiceStub(target.channel)
    page = await stub.ListAuditEvents(request, metadata=metadata, timeout=10.0)
    assert len(page.events) == 50, page
    return CallSpec.of(AUDIT + "ListAuditEvents", request.SerializeToString(), metadata)


@scenario(
    "credential",
    "keyhold",
    "ProviderService/GetConnectionCredential of a fresh (API-key) connection: owner and "
    "scope checks, decryption, an audited read",
)
async def credential(target: Target) -> CallSpec:
    app = target._tokens()
    suffix = secrets.token_hex(3)
    admin_email, user_email = f"admin-{suffix}@example.com", f"user-{suffix}@example.com"
    await app.identity.users.create(
        admin_email, BENCH_PASSWORD, "Admin", roles=frozenset({"admin", "user"})
    )
    await app.identity.users.create(user_email, BENCH_PASSWORD, "User", roles=frozenset({"user"}))
    admin = await app.identity.sessions.login(admin_email, BENCH_PASSWORD, "bench")
    user = await app.identity.sessions.login(user_email, BENCH_PASSWORD, "bench")
    stub: Any = provider_grpc.ProviderServiceStub(target.channel)
    await stub.CreateProvider(
        provider_pb.CreateProviderRequest(
            provider_id=f"broker-{suffix}",
            provider=provider_pb.Provider(
                display_name="Broker", auth_type=provider_pb.AUTH_TYPE_API_KEY
            ),
        ),
        metadata=bearer(admin.access_token.token),
        timeout=10.0,
    )
    started = await stub.StartConnection(
        provider_pb.StartConnectionRequest(
            provider=f"providers/broker-{suffix}", api_key="bench-api-key-" + suffix
        ),
        metadata=bearer(user.access_token.token),
        timeout=10.0,
    )
    metadata = await _service_bearer(target, ["provider.credentials.read"])
    request = provider_pb.GetConnectionCredentialRequest(name=started.connection.name)
    check = await stub.GetConnectionCredential(request, metadata=metadata, timeout=10.0)
    assert check.access_token == "bench-api-key-" + suffix, check
    return CallSpec.of(PROVIDER + "GetConnectionCredential", request.SerializeToString(), metadata)


@scenario("jwks", "keyhold", "IdentityService/GetJwks, public, no token")
async def jwks(target: Target) -> CallSpec:
    request = identity_pb.GetJwksRequest()
    response = await target.identity.GetJwks(request, timeout=5.0)
    assert response.keys, response
    return CallSpec.of(IDENTITY + "GetJwks", request.SerializeToString())


# The cheap RPC's load during the storm is light (it must not saturate the server by
# itself, or its p99 would measure its own queue); the storm is closed-loop logins.
STORM_CHEAP_RATE = 400.0  # WhoAmI calls/s, open loop: about a sixth of its capacity here
STORM_LOGIN_LOAD: dict[str, Any] = {"channels": 2, "concurrency": 8}


async def _open_loop(address: str, spec: CallSpec, rate: float, config: LoadConfig) -> LoadResult:
    """`spec` at a fixed `rate` (latency from each call's scheduled send, so queueing
    shows), measured after the warm-up in one-second windows."""
    mix = MixConfig(
        entries=(MixEntry("cheap", spec, 1.0),),
        seconds=config.warmup_seconds + config.seconds,
        window_seconds=1.0,
        rate=rate,
        channels=1,
        cpus=config.cpus,
    )
    run = await start_mix(address, mix)
    try:
        windows = [await run.window(number) for number in range(math.ceil(mix.seconds))]
        await run.finish()
    finally:
        run.kill()
    measured = windows[math.ceil(config.warmup_seconds) :]
    latencies = sorted(latency for window in measured for latency in window.latencies)
    errors: Counter[str] = Counter()
    for window in measured:
        errors.update(window.errors)
    calls = sum(sum(window.calls.values()) for window in measured)
    return LoadResult(
        calls=calls,
        seconds=float(len(measured)),
        calls_per_second=calls / max(1, len(measured)),
        latency_ms={f"p{p:g}": round(percentile(latencies, p) * 1000.0, 3) for p in PERCENTILES},
        errors=dict(errors),
        warmup_calls=0,
        client_cpu_seconds=0.0,
    )


@measurement(
    "login-storm",
    "keyhold",
    f"p99 of WhoAmI at {STORM_CHEAP_RATE:g} calls/s (open loop) alone, then during a "
    "closed-loop CreateSession storm (2x8 outstanding, Argon2id m=7 MiB t=5)",
)
async def login_storm(target: Target, server: ServerProcess, config: LoadConfig) -> list[Row]:
    cheap = await whoami(target)
    logins = await login(target)
    quiet = await _open_loop(server.address, cheap, STORM_CHEAP_RATE, config)
    during, storm = await asyncio.gather(
        _open_loop(server.address, cheap, STORM_CHEAP_RATE, config),
        run_load(server.address, logins, replace(config, processes=1, **STORM_LOGIN_LOAD)),
    )
    rows = []
    for name, result in (("whoami-quiet", quiet), ("whoami-storm", during), ("login-storm", storm)):
        rows.append(_row(name, result, server))
        _print_row(rows[-1])
    ratio = during.latency_ms["p99"] / quiet.latency_ms["p99"]
    print(f"whoami p99 during the login storm / without it: {ratio:.2f} (target <= 3)")
    return rows


SATURATED_LOGIN_LOAD: dict[str, Any] = {"channels": 1, "concurrency": 4}


@measurement(
    "login-saturated",
    "keyhold",
    "CreateSession (1x4 outstanding) while closed-loop WhoAmI keeps the server busy: "
    "logins must still get a share of the CPU",
)
async def login_saturated(target: Target, server: ServerProcess, config: LoadConfig) -> list[Row]:
    cheap = await whoami(target)
    logins = await login(target)
    busy, logged_in = await asyncio.gather(
        run_load(server.address, cheap, config),
        run_load(server.address, logins, replace(config, processes=1, **SATURATED_LOGIN_LOAD)),
    )
    rows = []
    for name, result in (("whoami-saturating", busy), ("login-saturated", logged_in)):
        rows.append(_row(name, result, server))
        _print_row(rows[-1])
    return rows


@dataclass
class Row:
    scenario: str
    calls_per_second: float
    calls_per_server_cpu_second: float | None
    server_cores: float | None  # server CPU seconds per wall second in the window
    load_cores: float  # load processes' CPU seconds per wall second in the window
    latency_ms: dict[str, float]
    errors: dict[str, int]
    calls: int
    warmup_calls: int
    server_cpu_seconds: float | None
    server_peak_rss_mb: float  # the largest server process's, with several workers
    group: str = ""  # the scenario that produced the row


def _row(name: str, result: LoadResult, server: ServerProcess) -> Row:
    cpu = result.server_cpu_seconds
    return Row(
        scenario=name,
        calls_per_second=round(result.calls_per_second, 1),
        calls_per_server_cpu_second=round(result.calls / cpu, 1) if cpu else None,
        server_cores=round(cpu / result.seconds, 2) if cpu is not None else None,
        load_cores=round(result.client_cpu_seconds / result.seconds, 2),
        latency_ms=result.latency_ms,
        errors=result.errors,
        calls=result.calls,
        warmup_calls=result.warmup_calls,
        server_cpu_seconds=round(cpu, 2) if cpu is not None else None,
        server_peak_rss_mb=round(server.peak_rss_mb(), 1),
    )


async def _measure(
    scenarios: list[Scenario], target: Target, server: ServerProcess, config: LoadConfig
) -> list[Row]:
    rows = []
    for each in scenarios:
        if each.measure is not None:
            produced = await each.measure(target, server, config)
            for row in produced:
                row.group = each.name
            rows += produced
            server.check_alive()
            continue
        assert each.prepare is not None
        spec = await each.prepare(target)
        result = await run_load(server.address, spec, config, sample=server.cpu_seconds)
        server.check_alive()
        rows.append(_row(each.name, result, server))
        rows[-1].group = each.name
        _print_row(rows[-1])
    return rows


@asynccontextmanager
async def _servers(
    kinds: Iterable[ServerKind],
    tmp: Path,
    database_url: str | None,
    environment: dict[str, str],
    cpus: frozenset[int] | None = None,
) -> AsyncIterator[dict[ServerKind, tuple[ServerProcess, Target]]]:
    """Every server kind the scenarios need, all running for the whole run, so that the
    rounds can alternate between them (the kinds measured seconds apart, not minutes)."""
    async with AsyncExitStack() as stack:
        running: dict[ServerKind, tuple[ServerProcess, Target]] = {}
        for kind in kinds:
            if kind in BASELINES:
                loop = "asyncio" if kind == "bare" else "uvloop"
                tuned = kind == "bare-tuned"
                experiments = keyhold_grpc_experiments(environment) if tuned else ""
                server = await stack.enter_async_context(
                    bare_server(tmp, cpus, loop, experiments, kind)
                )
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
                running[kind] = (server, Target(kind, server.address, channel))
            else:
                running[kind] = await stack.enter_async_context(
                    keyhold_target(tmp, database_url, environment, cpus)
                )
        yield running


@asynccontextmanager
async def keyhold_target(
    tmp: Path,
    database_url: str | None,
    environment: dict[str, str],
    cpus: frozenset[int] | None = None,
) -> AsyncIterator[tuple[ServerProcess, Target]]:
    """`keyhold serve` in its own process, and a Target whose built (never started) app
    shares the server's database and key, so its signing key signs the scenarios' tokens."""
    key = new_key_encryption_key()
    async with keyhold_server(tmp, key, database_url, environment, cpus) as server:
        settings = Settings(
            _env_file=None,
            data_dir=tmp,
            database_url=database_url,
            key_encryption_keys=key,
            migrate_on_start=False,
        )
        app = await build_server(settings)
        try:
            app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield server, Target("keyhold", server.address, channel, app)
        finally:
            await app.platform.database.dispose()
            app.identity.hasher.close()


HEADER = (
    f"{'scenario':<12} {'calls/s':>9} {'calls/srv-CPU-s':>15} {'srv cores':>9} "
    f"{'load cores':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
    f"{'RSS MB':>7}  errors"
)


def _print_row(row: Row) -> None:
    latency = row.latency_ms
    per_cpu = row.calls_per_server_cpu_second
    errors = ", ".join(f"{code} {count}" for code, count in row.errors.items()) or "0"
    print(
        f"{row.scenario:<12} {row.calls_per_second:>9,.0f} "
        f"{'-' if per_cpu is None else format(per_cpu, ',.0f'):>15} "
        f"{'-' if row.server_cores is None else row.server_cores:>9} {row.load_cores:>10} "
        f"{latency['p50']:>7.2f} {latency['p90']:>7.2f} {latency['p99']:>7.2f} "
        f"{latency['p99.9']:>8.2f} {row.server_peak_rss_mb:>7.1f}  {errors}",
        flush=True,
    )


def _median_rows(rounds: list[list[Row]]) -> list[Row]:
    """Per scenario, the round's row with the median calls per server CPU-second (the
    lower middle one for an even count): a real measurement, not an average of several."""
    by_scenario: dict[str, list[Row]] = {}
    for rows in rounds:
        for row in rows:
            by_scenario.setdefault(row.scenario, []).append(row)
    chosen = []
    for measured in by_scenario.values():
        measured.sort(key=lambda row: row.calls_per_server_cpu_second or 0.0)
        chosen.append(measured[(len(measured) - 1) // 2])
    return chosen


def _over(measured: str, baseline: str, rows: list[Row]) -> float | None:
    rates = {row.scenario: row.calls_per_server_cpu_second for row in rows}
    base, rate = rates.get(baseline), rates.get(measured)
    return round(rate / base, 3) if base and rate else None


def _ratio_over_rounds(
    baseline: str, rounds: list[list[Row]], measured: str = "whoami"
) -> tuple[float | None, list[float]]:
    """The median of the rounds' `measured`/`baseline` ratios, and those ratios."""
    by_round = [ratio for rows in rounds if (ratio := _over(measured, baseline, rows)) is not None]
    return (round(statistics.median(by_round), 3) if by_round else None), by_round


async def _throwaway_postgres() -> tuple[str, str]:
    name = f"keyhold_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def _drop_postgres(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench rpc",
        epilog="scenarios: "
        + "; ".join(f"{name}: {each.summary}" for name, each in SCENARIOS.items()),
    )
    parser.add_argument(
        "--scenarios",
        default="bare,whoami,jwks,login,refresh,service-token,introspect,introspect-repeat",
        help="comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before it")
    parser.add_argument("--channels", type=int, default=4, help="per load process")
    parser.add_argument("--concurrency", type=int, default=8, help="outstanding per channel")
    parser.add_argument("--processes", type=int, default=1, help="load processes")
    database = parser.add_mutually_exclusive_group()
    database.add_argument(
        "--database-url",
        help="PostgreSQL (postgresql+asyncpg://...) instead of SQLite; an empty database, "
        "migrated by the server (its signing keys get a fresh encryption key)",
    )
    database.add_argument(
        "--postgres", action="store_true", help="a throwaway database on the local PostgreSQL"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="keyhold serve --workers (needs PostgreSQL)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every scenario this many times, each server kind in turn, and report "
        "the median row; the whoami/bare ratio is the median of the rounds' ratios",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the server (all its processes) on the first CPU and the load processes "
        "and this driver on the others: the server's CPU time per call is then not "
        "inflated by sharing a core with its load (steadier, and somewhat higher, figures)",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the results here")
    parser.add_argument("--chart", metavar="PNG", type=Path, help="draw the results here")
    parser.add_argument(
        "--server-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a setting for the Keyhold server, e.g. KEYHOLD_LOG_LEVEL=info (logs go to a "
        "file) or KEYHOLD_METRICS_ADDRESS=127.0.0.1:0; repeatable",
    )
    return parser


async def run(argv: list[str]) -> dict[str, Any]:
    parser = _parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    chosen = [SCENARIOS[name] for name in names]
    malformed = [each for each in args.server_env if "=" not in each]
    if malformed:
        parser.error(f"--server-env takes NAME=VALUE, not {malformed}")
    server_env = dict(each.split("=", 1) for each in args.server_env)
    driver_cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(driver_cpus) < 2:
        parser.error("--pin needs two CPUs or more")
    server_cpus = frozenset(driver_cpus[:1]) if args.pin else None
    load_cpus = tuple(driver_cpus[1:]) if args.pin else ()
    config = LoadConfig(
        channels=args.channels,
        concurrency=args.concurrency,
        processes=args.processes,
        warmup_seconds=args.warmup,
        seconds=args.seconds,
        cpus=load_cpus,
    )
    throwaway, database_url = None, args.database_url
    if args.postgres:
        throwaway, database_url = await _throwaway_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="keyhold-bench-rpc-"))
    print(
        f"{config.processes} load process(es) x {config.channels} channels x "
        f"{config.concurrency} outstanding; {config.warmup_seconds:g} s warm-up, "
        f"{config.seconds:g} s measured; database: "
        f"{(database_url or 'sqlite').split(':', 1)[0]}; keyhold workers: {args.workers}"
    )
    print(HEADER, flush=True)
    rounds: list[list[Row]] = []
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)  # this driver too keeps off the server's CPU
    environment = {**ARGON2_ENV, **server_env, "KEYHOLD_WORKERS": str(args.workers)}
    kinds = dict.fromkeys(each.server for each in chosen)  # in the order first named
    try:
        async with _servers(kinds, tmp, database_url, environment, server_cpus) as servers:
            for round_number in range(args.rounds):
                if args.rounds > 1:
                    print(f"round {round_number + 1} of {args.rounds}", flush=True)
                rows: list[Row] = []
                for each in chosen:
                    server, target = servers[each.server]
                    rows += await _measure([each], target, server, config)
                rounds.append(rows)
    except BaseException:
        print(f"failed; server logs kept in {tmp}")
        raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        os.sched_setaffinity(0, driver_cpus)
        if throwaway:
            await _drop_postgres(throwaway)
    rows = _median_rows(rounds)
    if len(rounds) > 1:
        print(f"median of {len(rounds)} rounds (by calls per server CPU-second):")
        print(HEADER)
        for row in rows:
            _print_row(row)
    rows.sort(key=lambda row: names.index(row.group))  # stable: a group keeps its order
    medians = {row.scenario: row.calls_per_server_cpu_second for row in rows}
    ratios = {}
    for baseline in BASELINES:
        ratio, round_ratios = _ratio_over_rounds(baseline, rounds)
        ratios[baseline] = ratio, round_ratios
        if ratio is not None:
            print(
                f"whoami / {baseline} calls per server CPU-second: {ratio:.3f}"
                + (
                    f" (median of the rounds' ratios {sorted(round_ratios)})"
                    if len(round_ratios) > 1
                    else f" ({medians['whoami']:,.0f} / {medians[baseline]:,.0f})"
                )
            )
    login_ratio, login_round_ratios = _ratio_over_rounds("hash-only", rounds, "login")
    if login_ratio is not None:
        print(
            f"login / hash-only calls per server CPU-second: {login_ratio:.3f}"
            + (
                f" (median of the rounds' ratios {sorted(login_round_ratios)})"
                if len(login_round_ratios) > 1
                else f" ({medians['login']:,.1f} / {medians['hash-only']:,.1f})"
            )
        )
    ratio, round_ratios = ratios["bare"]
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "config": asdict(config),
        "database": (database_url or "sqlite").split(":", 1)[0],
        "workers": args.workers,
        "scenarios": [asdict(row) for row in rows],
        "whoami_over_bare_calls_per_server_cpu_second": ratio,
        "rounds": len(rounds),
        "whoami_over_bare_by_round": round_ratios,
        "login_over_hash_only_calls_per_server_cpu_second": login_ratio,
        "login_over_hash_only_by_round": login_round_ratios,
        **{
            f"whoami_over_{baseline.replace('-', '_')}_{key}": value
            for baseline in BASELINES[1:]
            for key, value in zip(
                ("calls_per_server_cpu_second", "by_round"), ratios[baseline], strict=True
            )
        },
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.chart:
        from bench.chart import draw

        draw(results, args.chart)
        print(f"chart written to {args.chart}")
    return results
