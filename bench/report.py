"""The whole RPC benchmark, as recorded in docs/benchmarks.md: every scenario on SQLite
and on PostgreSQL, the WhoAmI/bare ratio as the median of paired rounds (against bare
grpc.aio as it comes, and as `keyhold serve` runs it: uvloop and its gRPC transport), the
login storm
again with the server sharing its cores with the load, then one worker against two on
PostgreSQL, with JSON and a chart.

    python -m bench report [--out DIR] [--seconds 5] [--quick]

The server runs on its own CPU and the load on the other (`rpc --pin`), except in the
shared-cores storm and the worker runs (two workers need both CPUs). Writes
DIR/rpc-sqlite.json, DIR/rpc-postgres.json, DIR/ratio.json, DIR/storm-shared.json,
DIR/workers-1.json, DIR/workers-2.json, DIR/summary.json and DIR/rpc.png (default DIR:
bench-results/). About twelve minutes on two cores; `--quick` (2 s windows, fewer
scenarios) is for trying the harness out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench import rpc
from bench.chart import draw_runs

ALL = (
    "bare,bare-context,whoami,jwks,login,refresh,service-token,introspect,"
    "introspect-repeat,audit-list,credential,login-storm,login-saturated"
)
QUICK = "bare,whoami,jwks,service-token,login-storm"
# Throughput of one process against two on this machine: cheap calls, enough load
# processes and outstanding calls to keep two workers busy.
WORKER_SCENARIOS = "whoami,service-token"
RATIO_ROUNDS = 5


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench report")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = ["--seconds", str(2.0 if args.quick else args.seconds)]
    if args.quick:
        seconds += ["--warmup", "1"]
    scenarios = QUICK if args.quick else ALL
    runs: dict[str, dict[str, Any]] = {}
    for name, extra in (("rpc-sqlite", []), ("rpc-postgres", ["--postgres"])):
        print(f"\n== {name}")
        runs[name] = await rpc.run(
            [
                "--scenarios",
                scenarios,
                "--pin",
                *seconds,
                *extra,
                "--json",
                str(args.out / f"{name}.json"),
            ]
        )
    print(f"\n== ratio (PostgreSQL, {RATIO_ROUNDS} rounds of bare, bare-tuned then whoami)")
    runs["ratio"] = await rpc.run(
        [
            "--scenarios",
            "bare,bare-tuned,whoami",
            "--pin",
            "--rounds",
            str(2 if args.quick else RATIO_ROUNDS),
            *seconds,
            "--postgres",
            "--json",
            str(args.out / "ratio.json"),
        ]
    )
    print("\n== storm-shared (PostgreSQL, server and load on the same two cores)")
    runs["storm-shared"] = await rpc.run(
        [
            "--scenarios",
            "login-storm",
            *seconds,
            "--postgres",
            "--json",
            str(args.out / "storm-shared.json"),
        ]
    )
    for workers in (1, 2):
        name = f"workers-{workers}"
        print(f"\n== {name} (PostgreSQL, 2 load processes)")
        runs[name] = await rpc.run(
            [
                "--scenarios",
                WORKER_SCENARIOS,
                *seconds,
                "--postgres",
                "--processes",
                "2",
                "--workers",
                str(workers),
                "--json",
                str(args.out / f"{name}.json"),
            ]
        )
    draw_runs([runs["rpc-sqlite"], runs["rpc-postgres"]], args.out / "rpc.png")
    summary = _summary(runs)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nchart: {args.out / 'rpc.png'}; summary: {args.out / 'summary.json'}")
    print(json.dumps(summary, indent=2))
    return summary


def _rate(run: dict[str, Any], scenario: str, key: str) -> float | None:
    for row in run["scenarios"]:
        if row["scenario"] == scenario:
            value = row[key]
            return float(value) if value is not None else None
    return None


def _storm(run: dict[str, Any]) -> float:
    quiet = next(r for r in run["scenarios"] if r["scenario"] == "whoami-quiet")
    storm = next(r for r in run["scenarios"] if r["scenario"] == "whoami-storm")
    return round(float(storm["latency_ms"]["p99"] / quiet["latency_ms"]["p99"]), 2)


def _summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    per_cpu = "calls_per_server_cpu_second"
    summary: dict[str, Any] = {}
    for database in ("sqlite", "postgres"):
        run = runs[f"rpc-{database}"]
        bare, whoami = _rate(run, "bare", per_cpu), _rate(run, "whoami", per_cpu)
        summary[database] = {
            "whoami_over_bare": round(whoami / bare, 3) if bare and whoami else None,
            "storm_p99_over_quiet_p99": _storm(run),
            "logins_per_second_while_saturated": _rate(run, "login-saturated", "calls_per_second"),
            "peak_rss_mb": max(r["server_peak_rss_mb"] for r in run["scenarios"]),
            **{
                row["scenario"]: row[per_cpu]
                for row in run["scenarios"]
                if row[per_cpu] is not None
            },
        }
    ratio = runs["ratio"]
    summary["whoami_over_bare_paired_rounds"] = {
        "median": ratio["whoami_over_bare_calls_per_server_cpu_second"],
        "rounds": ratio["whoami_over_bare_by_round"],
    }
    summary["whoami_over_bare_tuned_paired_rounds"] = {
        "median": ratio["whoami_over_bare_tuned_calls_per_server_cpu_second"],
        "rounds": ratio["whoami_over_bare_tuned_by_round"],
    }
    summary["storm_p99_over_quiet_p99_shared_cores"] = _storm(runs["storm-shared"])
    summary["workers_calls_per_second"] = {
        scenario: {
            str(workers): _rate(runs[f"workers-{workers}"], scenario, "calls_per_second")
            for workers in (1, 2)
        }
        for scenario in WORKER_SCENARIOS.split(",")
    }
    return summary
