"""A bounded soak: the server under a steady mix of RPCs at about 70% of its measured
capacity, on PostgreSQL, watching for errors and for anything that grows.

    python -m bench soak [--minutes 10] [--fraction 0.7] [--sample-seconds 10]
                         [--warmup-minutes 1] [--capacity-seconds 12]
                         [--mix whoami=35,introspect=15,...] [--processes 1]
                         [--database-url URL] [--json PATH]

Loopback only: `keyhold serve` in its own process (`bench.serve_under_test`, rate limits
off, Keycloak's Argon2id profile as in `bench rpc`), the load in others
(`bench.mixed_load`). First the mix's capacity is measured in a closed loop; then the
mix runs open loop at `fraction` of it for `minutes`. Every `sample-seconds` the
server's resident memory (VmRSS), open file descriptors (/proc/PID/fd), CPU and its
PostgreSQL connections (pg_stat_activity for the bench database) are read beside the
window's calls, errors and latencies. At the end the audit chain is verified.

The verdict: no INTERNAL (or UNKNOWN) error and no "unhandled_error" in the server log,
no call lost (issued and never completed), RSS growth after the warm-up under 10%, and
flat descriptor and connection counts after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import shutil
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench.loadgen import CallSpec, percentile
from bench.mixed_load import MixConfig, MixEntry, closed_loop_rate, start_mix
from bench.rpc import (
    ARGON2_ENV,
    IDENTITY,
    SCENARIOS,
    Target,
    _bench_user,
    _bulk_sessions,
    _drop_postgres,
    _throwaway_postgres,
    keyhold_target,
)
from bench.serve_under_test import ServerProcess
from keyhold.application.audit.trail import verify_trail
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.server import KeyholdServer

OWN_JSON_OPTION = True
DEFAULT_MIX = "whoami=35,introspect=15,refresh=15,audit-list=14,jwks=10,service-token=10,login=1"
RSS_GROWTH_LIMIT = 0.10
FD_SLACK = 4  # descriptors that may come and go (a reconnecting channel, a log rotation)
CONNECTION_SLACK = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument("--fraction", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="sampling period")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help="not judged for growth (default: 1 minute, or a fifth of a shorter soak)",
    )
    parser.add_argument(
        "--capacity-seconds", type=float, default=12.0, help="closed-loop measurement"
    )
    parser.add_argument("--mix", default=DEFAULT_MIX, help="scenario=weight,...")
    parser.add_argument("--processes", type=int, default=1, help="load processes")
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database (default: a throwaway one)"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the results here")
    return parser


def _mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        known = SCENARIOS.get(name)
        if known is None or known.server != "keyhold" or known.prepare is None:
            raise SystemExit(f"unknown Keyhold load scenario {name!r}")
        weights[name] = float(weight or 1)
    return weights


async def _refresh_spec(target: Target, count: int) -> CallSpec:
    """`count` live refresh tokens, one per call (they are single-use)."""
    assert target.app is not None
    email = await _bench_user(target)
    tokens = await _bulk_sessions(target.app, email, count)
    requests = [
        identity_pb.RefreshSessionRequest(refresh_token=token).SerializeToString()
        for token in tokens
    ]
    return CallSpec.of(IDENTITY + "RefreshSession", requests)


async def _entries(
    target: Target, weights: dict[str, float], refresh_tokens: int
) -> tuple[MixEntry, ...]:
    entries = []
    for name, weight in weights.items():
        if name == "refresh":
            spec = await _refresh_spec(target, refresh_tokens)
        else:
            prepare = SCENARIOS[name].prepare
            assert prepare is not None  # _mix took only load scenarios
            spec = await prepare(target)
        entries.append(MixEntry(name, spec, weight))
    return tuple(entries)


def _refresh_tokens_needed(weights: dict[str, float], rate: float, seconds: float) -> int:
    share = weights.get("refresh", 0.0) / sum(weights.values())
    return math.ceil(rate * share * seconds * 1.2) + 500 if share else 0


@dataclass
class Sample:
    seconds: float  # since the soak started
    calls_per_second: float
    errors: int
    skipped: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: float
    fds: int
    pg_connections: int
    server_cpu_percent: float


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1_000_000
    return math.nan


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _pg_connections(monitor: asyncpg.Connection) -> int:
    return int(
        await monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


HEADER = (
    f"{'t s':>6} {'calls/s':>8} {'errors':>6} {'skipped':>7} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>7} {'RSS MB':>7} {'fds':>4} {'pg conns':>8} {'srv CPU%':>8}"
)


def _print_sample(sample: Sample) -> None:
    print(
        f"{sample.seconds:>6.0f} {sample.calls_per_second:>8,.0f} {sample.errors:>6} "
        f"{sample.skipped:>7} {sample.p50_ms:>7.2f} {sample.p99_ms:>7.2f} {sample.max_ms:>7.1f} "
        f"{sample.rss_mb:>7.1f} {sample.fds:>4} {sample.pg_connections:>8} "
        f"{sample.server_cpu_percent:>8.0f}",
        flush=True,
    )


def _verdict(
    samples: list[Sample], warmup: int, errors: Counter[str], lost: int, unhandled: int
) -> dict[str, Any]:
    judged = samples[warmup:] or samples[-1:]
    baseline = samples[warmup - 1] if warmup >= 1 else samples[0]
    end = samples[-1]
    growth = (end.rss_mb - baseline.rss_mb) / baseline.rss_mb
    internal = sum(n for key, n in errors.items() if key.endswith((" INTERNAL", " UNKNOWN")))
    fds = [s.fds for s in judged]
    connections = [s.pg_connections for s in judged]
    checks = {
        "no INTERNAL or UNKNOWN error": internal == 0,
        "no unhandled_error in the server log": unhandled == 0,
        "no call lost": lost == 0,
        f"RSS growth after warm-up < {RSS_GROWTH_LIMIT:.0%}": growth < RSS_GROWTH_LIMIT,
        "open descriptors flat": max(fds) - baseline.fds <= FD_SLACK,
        "PostgreSQL connections flat": max(connections) - baseline.pg_connections
        <= CONNECTION_SLACK,
    }
    return {
        "internal_or_unknown_errors": internal,
        "unhandled_errors_logged": unhandled,
        "calls_lost": lost,
        "rss_mb_after_warmup": round(baseline.rss_mb, 1),
        "rss_mb_end": round(end.rss_mb, 1),
        "rss_mb_max_after_warmup": round(max(s.rss_mb for s in judged), 1),
        "rss_growth": round(growth, 4),
        "fds_after_warmup": baseline.fds,
        "fds_range_after_warmup": [min(fds), max(fds)],
        "pg_connections_after_warmup": baseline.pg_connections,
        "pg_connections_range_after_warmup": [min(connections), max(connections)],
        "checks": checks,
        "passed": all(checks.values()),
    }


async def _soak(
    server: ServerProcess,
    app: KeyholdServer,
    target: Target,
    args: argparse.Namespace,
    database_name: str,
    database_dsn: str,
) -> dict[str, Any]:
    weights = _mix(args.mix)
    capacity_entries = await _entries(target, weights, refresh_tokens=6_000)
    print(f"mix: {', '.join(f'{name} {weight:g}' for name, weight in weights.items())}")
    base = MixConfig(
        capacity_entries,
        seconds=3.0 + args.capacity_seconds,
        window_seconds=1.0,
        processes=args.processes,
    )
    capacity = await closed_loop_rate(server.address, base, warmup_seconds=3.0)
    server.check_alive()
    rate = capacity * args.fraction
    seconds = args.minutes * 60.0
    print(
        f"capacity (closed loop, {args.capacity_seconds:g} s after 3 s warm-up): "
        f"{capacity:,.0f} calls/s; soaking at {args.fraction:.0%}: {rate:,.0f} calls/s "
        f"for {seconds:g} s",
        flush=True,
    )
    tokens = _refresh_tokens_needed(weights, rate, seconds)
    soak_entries = []
    for entry in capacity_entries:
        if entry.name == "refresh":  # fresh single-use tokens, enough for the whole soak
            entry = MixEntry(entry.name, await _refresh_spec(target, tokens), entry.weight)
        soak_entries.append(entry)
    entries = tuple(soak_entries)
    await app.platform.database.dispose()  # from here on, only the server's connections count
    windows = max(1, round(seconds / args.sample_seconds))
    warmup_minutes = args.warmup_minutes
    if warmup_minutes is None:
        warmup_minutes = min(1.0, args.minutes / 5)
    warmup = min(windows - 1, math.ceil(warmup_minutes * 60 / args.sample_seconds))
    config = MixConfig(
        entries,
        seconds=windows * args.sample_seconds,
        window_seconds=args.sample_seconds,
        rate=rate,
        processes=args.processes,
    )
    monitor = await asyncpg.connect(database_dsn)
    samples: list[Sample] = []
    latencies: dict[str, array[float]] = {}  # after the warm-up, per scenario
    try:
        run = await start_mix(server.address, config)
        try:
            print(HEADER, flush=True)
            cpu_before = server.cpu_seconds()
            for number in range(windows):
                boundary = run.start + (number + 1) * args.sample_seconds
                await _sleep_until(boundary)
                server.check_alive()
                rss, fds = _rss_mb(server.pid), _fds(server.pid)
                connections = await _pg_connections(monitor)
                cpu = server.cpu_seconds()
                merged = await run.window(number)
                if number >= warmup:
                    for scenario, each in merged.by_scenario.items():
                        latencies.setdefault(scenario, array("d")).extend(each)
                window = merged.summary()
                samples.append(
                    Sample(
                        seconds=(number + 1) * args.sample_seconds,
                        calls_per_second=window["calls"] / args.sample_seconds,
                        errors=window["errors"],
                        skipped=window["skipped"],
                        p50_ms=window["p50_ms"],
                        p99_ms=window["p99_ms"],
                        max_ms=window["max_ms"],
                        rss_mb=rss,
                        fds=fds,
                        pg_connections=connections,
                        server_cpu_percent=100 * (cpu - cpu_before) / args.sample_seconds,
                    )
                )
                cpu_before = cpu
                _print_sample(samples[-1])
            totals, _ = await run.finish()
        finally:
            run.kill()
    finally:
        await monitor.close()
    server.check_alive()
    started = time.monotonic()
    chain = await verify_trail(app.audit.trail, 0, 0)
    verify_seconds = time.monotonic() - started
    await app.platform.database.dispose()
    unhandled = server.log_path.read_text(errors="replace").count("unhandled_error")
    lost = totals.issued - totals.completed
    verdict = _verdict(samples, warmup, totals.errors, lost, unhandled)
    calls = sum(totals.calls.values())
    print(
        f"\n{totals.issued:,} calls sent, {totals.completed:,} completed ({lost} lost), "
        f"{calls:,} OK, {sum(totals.errors.values())} errors "
        f"{dict(totals.errors) or ''}, {totals.skipped} not sent (too many outstanding)"
    )
    by_scenario = {
        scenario: {
            "ok": totals.calls[scenario],
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        }
        for scenario, ordered in ((k, sorted(v)) for k, v in sorted(latencies.items()))
    }
    print("after the warm-up, by scenario (OK calls in the whole soak, latency p50 / p99 ms):")
    for scenario, figures in by_scenario.items():
        print(
            f"  {scenario:<14} {figures['ok']:>9,} {figures['p50_ms']:>8.2f} "
            f"{figures['p99_ms']:>8.2f}"
        )
    print(
        f"audit chain {'OK' if chain.ok else 'BROKEN'} over {chain.checked_count:,} events "
        f"({verify_seconds:.1f} s)"
    )
    print(
        f"RSS {verdict['rss_mb_after_warmup']} MB after the {warmup * args.sample_seconds:g} s "
        f"warm-up, {verdict['rss_mb_end']} MB at the end ({verdict['rss_growth']:+.1%}), "
        f"max {verdict['rss_mb_max_after_warmup']} MB; fds {verdict['fds_range_after_warmup']}; "
        f"PostgreSQL connections {verdict['pg_connections_range_after_warmup']}"
    )
    for check, ok in verdict["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    verdict["checks"]["audit chain verifies"] = chain.ok
    verdict["passed"] = verdict["passed"] and chain.ok
    return {
        "database": database_name,
        "capacity_calls_per_second": round(capacity, 1),
        "fraction": args.fraction,
        "target_calls_per_second": round(rate, 1),
        "minutes": args.minutes,
        "sample_seconds": args.sample_seconds,
        "warmup_samples": warmup,
        "mix": weights,
        "refresh_tokens_prepared": tokens,
        "calls": {
            "issued": totals.issued,
            "completed": totals.completed,
            "lost": lost,
            "ok": calls,
            "ok_by_scenario": dict(sorted(totals.calls.items())),
            "latency_after_warmup_by_scenario": by_scenario,
            "errors": dict(sorted(totals.errors.items())),
            "not_sent": totals.skipped,
        },
        "audit_chain": {
            "ok": chain.ok,
            "checked": chain.checked_count,
            "verify_seconds": round(verify_seconds, 1),
        },
        "samples": [asdict(sample) for sample in samples],
        "verdict": verdict,
    }


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def run(argv: list[str]) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or not 0 < args.fraction <= 1:
        raise SystemExit("--minutes must be positive and --fraction in (0, 1]")
    throwaway, database_url = None, args.database_url
    if database_url is None:
        throwaway, database_url = await _throwaway_postgres()
    if not database_url.startswith("postgresql"):
        raise SystemExit("the soak runs on PostgreSQL: --database-url postgresql+asyncpg://...")
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    name = dsn.rsplit("/", 1)[1]
    tmp = Path(tempfile.mkdtemp(prefix="keyhold-bench-soak-"))
    try:
        async with keyhold_target(tmp, database_url, ARGON2_ENV) as (server, target):
            assert target.app is not None
            results = await _soak(server, target.app, target, args, name, dsn)
    except BaseException:
        print(f"failed; server log kept in {tmp}")
        raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if throwaway:
            await _drop_postgres(throwaway)
    results = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        **results,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return results
