"""Sustained audit append throughput with the hash chain (group commit, advisory lock).

    python -m bench audit-append [--database-url URL] [--seconds 5] [--writers 1,16]

Each writer appends records one after another, awaiting each (as an RPC handler does);
events/s counts records durably committed to the chain. The chain is verified after.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from keyhold.adapters.persistence.audit.audit_writer import BatchingAuditAppender
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.engine import create_engine
from keyhold.adapters.persistence.migrate import migrate
from keyhold.application.audit.trail import verify_trail
from keyhold.domain.audit.events import ActorType, AuditRecord, Outcome
from keyhold.domain.clock import SystemClock
from keyhold.settings import Settings
from keyhold.wiring.audit import audit_trail

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _record(clock: SystemClock) -> AuditRecord:
    return AuditRecord(
        event_id=uuid.uuid4().hex,
        attempt_id=uuid.uuid4().hex,
        time=clock.now(),
        actor_type=ActorType.USER,
        actor_id="users/bench",
        action="identity.session.create",
        outcome=Outcome.SUCCEEDED,
        resource_type="session",
        resource_name="sessions/x",
        peer="ipv4:127.0.0.1:50000",
        user_agent="bench/1.0",
        request_id=uuid.uuid4().hex,
        trace_id="",
        status_code=0,
        reason="",
        details={"k": "v"},
    )


async def _measure(appender: BatchingAuditAppender, writers: int, seconds: float) -> float:
    clock = SystemClock()
    stop = time.monotonic() + seconds
    counts = [0] * writers

    async def writer(index: int) -> None:
        while time.monotonic() < stop:
            await appender.append(_record(clock))
            counts[index] += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    return sum(counts) / (time.monotonic() - started)


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench audit-append")
    parser.add_argument("--database-url", help="default: a throwaway PostgreSQL database")
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", default="1,16")
    args = parser.parse_args(argv)
    throwaway = None
    url = args.database_url
    tmp = Path(tempfile.mkdtemp(prefix="keyhold-bench-"))
    if args.sqlite:
        url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    elif url is None:
        throwaway = f"keyhold_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{throwaway}"')
        await admin.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{throwaway}"
    settings = Settings(_env_file=None, database_url=url, data_dir=tmp)
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
    )
    database = Database(engine)
    results: dict[str, Any] = {"database": url.split(":", 1)[0], "seconds": args.seconds}
    try:
        await migrate(database.engine)
        trail = audit_trail(database, settings.database_pool_size)
        appender = BatchingAuditAppender(trail)
        await _measure(appender, 4, 1.0)  # warm-up: connections, caches
        for writers in (int(w) for w in args.writers.split(",")):
            rate = await _measure(appender, writers, args.seconds)
            results[f"writers_{writers}_events_per_second"] = round(rate)
            print(f"{writers:>3} writers: {rate:8.0f} events/s")
        report = await verify_trail(trail, 0, 0)
        results["chain_ok"], results["events"] = report.ok, report.checked_count
        print(f"chain verified: {report.ok}, {report.checked_count} events")
    finally:
        await database.dispose()
        if throwaway:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'DROP DATABASE "{throwaway}" WITH (FORCE)')
            await admin.close()
    return results
