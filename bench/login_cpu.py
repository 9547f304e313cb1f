"""Keyhold's own CPU per login, in process: no gRPC, no load generator, no other process
on the server's core.

    python -m bench login-cpu [--database postgres|sqlite] [--logins 640] [--repeats 3]
                              [--accounts 64] [--time-cost 5] [--profile PATH]

The login use case (lockout reservation, user lookup, Argon2id, session and refresh
token, access token, audit records) called one login after another against a throwaway
database (PostgreSQL, or SQLite in a temporary directory), Argon2id at m=7 MiB, p=1 and
`--time-cost` iterations (the `rpc login` scenario's parameters by default). The same
number of password verifications alone, through the server's own hasher, is timed in
the same run, the two alternating `--repeats` times: process CPU time per login and per
verification, best of the repeats each, and their ratio (logins per CPU-second over
verifications per CPU-second). What `rpc login` measures also includes where the
database's own work lands. `--profile PATH` writes the logins' cProfile statistics.
"""

from __future__ import annotations

import argparse
import cProfile
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from keyhold.server import KeyholdServer, build_server
from keyhold.settings import Settings

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "correct horse battery staple"
MEMORY_KIB = 7 * 1024


@asynccontextmanager
async def _database_url(engine: str) -> AsyncIterator[str | None]:
    """A throwaway PostgreSQL database's URL, or None (SQLite in the data directory)."""
    if engine == "sqlite":
        yield None
        return
    database = f"keyhold_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _cpu_per_call(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    started = time.process_time()
    for i in range(calls):
        await call(i)
    return (time.process_time() - started) / calls


async def _measure(app: KeyholdServer, args: argparse.Namespace) -> tuple[float, float]:
    emails = [f"login-{i}-{secrets.token_hex(3)}@example.com" for i in range(args.accounts)]
    for email in emails:
        await app.identity.users.create(email, PASSWORD, "Bench")
    password_hash = await app.identity.hasher.hash(PASSWORD)

    async def login(i: int) -> None:
        await app.identity.sessions.login(emails[i % len(emails)], PASSWORD, "bench")

    async def verify(i: int) -> None:
        if not await app.identity.hasher.verify(password_hash, PASSWORD):
            raise RuntimeError("the benchmark password did not verify")

    for i in range(len(emails)):  # warm-up: connections, statement caches
        await login(i)
        await verify(i)
    profile = cProfile.Profile() if args.profile else None
    best_login = best_hash = float("inf")
    for _ in range(args.repeats):
        if profile is not None:
            profile.enable()
        best_login = min(best_login, await _cpu_per_call(args.logins, login))
        if profile is not None:
            profile.disable()
        best_hash = min(best_hash, await _cpu_per_call(args.logins, verify))
    if profile is not None:
        profile.dump_stats(args.profile)
    return best_login, best_hash


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench login-cpu")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--logins", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=64)
    parser.add_argument("--time-cost", type=int, default=5, help="Argon2id iterations")
    parser.add_argument("--profile", metavar="PATH", help="cProfile the logins, stats here")
    args = parser.parse_args(argv)
    async with _database_url(args.database) as database_url:
        settings = Settings(
            _env_file=None,
            listen_address="127.0.0.1:0",
            data_dir=Path(tempfile.mkdtemp(prefix="keyhold-bench-")),
            database_url=database_url,
            migrate_on_start=True,
            rate_limits_enabled=False,
            log_level="warning",
            argon2_memory_kib=MEMORY_KIB,
            argon2_time_cost=args.time_cost,
            argon2_parallelism=1,
        )
        app = await build_server(settings)
        await app.start()
        try:
            login, verify = await _measure(app, args)
        finally:
            await app.stop(grace=0)
    ratio = verify / login
    print(
        f"{args.database}, Argon2id m=7 MiB t={args.time_cost} p=1: "
        f"{login * 1000:.2f} ms of CPU per login, {verify * 1000:.2f} ms per password "
        f"verification alone, {(login - verify) * 1000:.2f} ms besides it; "
        f"login / hash-only per CPU-second: {ratio:.3f}"
    )
    return {
        "database": args.database,
        "argon2_time_cost": args.time_cost,
        "login_cpu_ms": round(login * 1000, 3),
        "hash_only_cpu_ms": round(verify * 1000, 3),
        "login_over_hash_only": round(ratio, 3),
        "logins": args.logins,
    }
