"""Keyhold's own CPU per login, in process: no gRPC, no load generator, no other process
on the server's core.

    python -m bench login-cpu [--logins 640] [--repeats 3] [--accounts 64]

The login use case (lockout reservation, user lookup, Argon2id at its cheapest allowed
cost, session and refresh token, access token, audit records) called one login after
another against a throwaway PostgreSQL database. Process CPU time per login, best of
`--repeats`. What `rpc login` measures also includes where the database's own work lands.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from keyhold.server import build_server
from keyhold.settings import Settings

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "correct horse battery staple"


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench login-cpu")
    parser.add_argument("--logins", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=64)
    args = parser.parse_args(argv)
    database = f"keyhold_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        settings = Settings(
            _env_file=None,
            listen_address="127.0.0.1:0",
            data_dir=Path(tempfile.mkdtemp(prefix="keyhold-bench-")),
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            migrate_on_start=True,
            rate_limits_enabled=False,
            log_level="warning",
            argon2_memory_kib=7 * 1024,
            argon2_time_cost=1,
        )
        app = await build_server(settings)
        await app.start()
        try:
            emails = [f"login-{i}-{secrets.token_hex(3)}@example.com" for i in range(args.accounts)]
            for email in emails:
                await app.identity.users.create(email, PASSWORD, "Bench")
            for email in emails:  # warm-up: connections, statement caches
                await app.identity.sessions.login(email, PASSWORD, "bench")
            best = float("inf")
            for _ in range(args.repeats):
                started = time.process_time()
                for i in range(args.logins):
                    await app.identity.sessions.login(emails[i % len(emails)], PASSWORD, "bench")
                best = min(best, (time.process_time() - started) / args.logins)
        finally:
            await app.stop(grace=0)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    print(f"login in process: {best * 1000:.2f} ms of CPU per login (Argon2id m=7 MiB t=1)")
    return {"login_cpu_ms": round(best * 1000, 3), "logins": args.logins}
