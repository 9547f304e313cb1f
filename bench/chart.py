"""A PNG of one or more `bench rpc --json` results: throughput per server CPU-second and
p99 latency per scenario, one bar per run (e.g. SQLite and PostgreSQL side by side).

    python -m bench chart OUT.png RESULTS.json [MORE.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _label(results: dict[str, Any]) -> str:
    workers = results.get("workers", 1)
    return f"{results['database']}" + (f", {workers} workers" if workers > 1 else "")


def draw_runs(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for run in runs:
        for row in run["scenarios"]:
            if row["scenario"] not in names:
                names.append(row["scenario"])
    figure, (rate_axis, p99_axis) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    width = 0.8 / len(runs)
    for index, run in enumerate(runs):
        rows = {row["scenario"]: row for row in run["scenarios"]}
        xs = [n + index * width for n in range(len(names))]
        rates = [(rows[n]["calls_per_server_cpu_second"] or 0) if n in rows else 0 for n in names]
        p99s = [rows[n]["latency_ms"]["p99"] if n in rows else 0 for n in names]
        rate_axis.bar(xs, rates, width, label=_label(run))
        p99_axis.bar(xs, p99s, width, label=_label(run))
    rate_axis.set_ylabel("calls per server CPU-second")
    rate_axis.set_yscale("log")
    rate_axis.legend()
    rate_axis.set_title("Keyhold RPC throughput and tail latency (bench rpc)")
    p99_axis.set_ylabel("p99 latency, ms")
    p99_axis.set_yscale("log")
    p99_axis.set_xticks([n + 0.4 - width / 2 for n in range(len(names))])
    p99_axis.set_xticklabels(names, rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw(results: dict[str, Any], path: Path) -> None:
    draw_runs([results], path)


async def run(argv: list[str]) -> dict[str, Any]:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    runs = [json.loads(Path(each).read_text()) for each in argv[1:]]  # noqa: ASYNC240
    draw_runs(runs, Path(argv[0]))
    print(f"chart written to {argv[0]}")
    return {"chart": argv[0], "runs": argv[1:]}
