"""Run a benchmark by name: `python -m bench --list` shows them."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys

BENCHMARKS = {
    "audit-append": "bench.audit_append",
    "audit-query": "bench.audit_query",
    "chart": "bench.chart",
    "client-verify": "bench.client_verify",
    "login-cpu": "bench.login_cpu",
    "pipeline": "bench.pipeline",
    "report": "bench.report",
    "rpc": "bench.rpc",
    "transport-identity": "bench.transport_identity",
    "soak": "bench.soak",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", nargs="?", choices=sorted(BENCHMARKS))
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    argv = sys.argv[1:]
    # Everything after the benchmark's name is the benchmark's own (`rpc --json PATH`)...
    split = next((i for i, arg in enumerate(argv) if arg in BENCHMARKS), len(argv))
    args = parser.parse_args(argv[: split + 1])
    rest = argv[split + 1 :]
    if args.list or args.name is None:
        print("\n".join(sorted(BENCHMARKS)))
        return 0
    module = importlib.import_module(BENCHMARKS[args.name])
    # ...except a bare `--json` for benchmarks that have no `--json` option of their own.
    if "--json" in rest and not getattr(module, "OWN_JSON_OPTION", False):
        rest.remove("--json")
        args.json = True
    results = asyncio.run(module.run(rest))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
