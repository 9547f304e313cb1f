"""Filtered ListAuditEvents pages on a large trail (PostgreSQL).

    python -m bench audit-query [--rows 1000000] [--repeat 50]

Bulk-loads rows with generate_series (their hashes are not a valid chain: this
measures reads only), then times the repository's newest-first page query for each
filter, from the head and from deep inside the trail.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from keyhold.adapters.persistence.audit.audit_trail import SqlAuditTrail
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.migrate import migrate
from keyhold.domain.audit.events import AuditFilter, Outcome
from keyhold.settings import Settings

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
LOAD = """
INSERT INTO audit_events
SELECT n, md5(n::text), md5((n / 2)::text), now() - (($1 - n) || ' milliseconds')::interval,
       'user', 'users/' || (n % 5000), (ARRAY['identity.session.create','identity.user.update',
       'provider.credential.read','audit.events.list'])[1 + n % 4],
       (ARRAY['attempted','succeeded','failed','denied'])[1 + (n / 7) % 4],
       'session', 'sessions/' || (n % 20000), 'ipv4:10.0.0.1:1', 'ua', md5(n::text), '',
       0, '', '{}', ''::bytea, ''::bytea, ''::bytea
FROM generate_series(1, $1) AS n
"""


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench audit-query")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    name = f"keyhold_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    settings = Settings(_env_file=None, database_url=url, data_dir=Path(tempfile.mkdtemp()))
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
    )
    database = Database(engine)
    results: dict[str, Any] = {"rows": args.rows}
    try:
        await migrate(database.engine)
        raw = await asyncpg.connect(url.replace("+asyncpg", ""))
        started = time.monotonic()
        await raw.execute(LOAD, args.rows)
        await raw.execute("ANALYZE audit_events")
        await raw.close()
        print(f"loaded {args.rows} rows in {time.monotonic() - started:.1f}s")
        trail = SqlAuditTrail(database)
        cases = {
            "no filter": AuditFilter(),
            "action": AuditFilter(action="provider.credential.read"),
            "actor": AuditFilter(actor_id="users/4242"),
            "resource": AuditFilter(resource_name="sessions/777"),
            "outcome": AuditFilter(outcome=Outcome.DENIED),
            "action+outcome": AuditFilter(action="identity.user.update", outcome=Outcome.FAILED),
        }
        for label, where in cases.items():
            for position, before in (("head", None), ("deep", args.rows // 10)):
                timings = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    page = await trail.newest_first(where, before, 51)
                    timings.append((time.perf_counter() - t0) * 1000)
                p50 = statistics.median(timings)
                p99 = sorted(timings)[int(len(timings) * 0.99) - 1]
                results[f"{label} @{position} p50_ms"] = round(p50, 2)
                summary = f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(page)} rows)"
                print(f"{label:>15} @{position}: {summary}")
    finally:
        await database.dispose()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    return results
