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
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", nargs="?", choices=sorted(BENCHMARKS))
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    args, rest = parser.parse_known_args()
    if args.list or args.name is None:
        print("\n".join(sorted(BENCHMARKS)))
        return 0
    module = importlib.import_module(BENCHMARKS[args.name])
    results = asyncio.run(module.run(rest))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
