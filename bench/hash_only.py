"""Password checks alone, as a Keyhold server would run them: the yardstick for a login.

    python -m bench.hash_only --concurrency 32 --warmup 2 --seconds 5

Run with the server's own `KEYHOLD_*` environment (`hash_only_processes` does), this
process builds the server's `Settings` and its `Argon2Hasher` (the same Argon2id
parameters, the same number of hashing threads, the same event loop), keeps
`--concurrency` verifications of a correct password outstanding, and after the warm-up
prints one JSON line: verifications completed in the measured window, the window's
length, and this process's CPU time over it (every thread's). A login can cost no less
CPU than its password check; logins per server CPU-second over these verifications per
CPU-second is the share of a login's CPU that is the hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keyhold.adapters.crypto.argon2_hasher import Argon2Hasher, Argon2Parameters
from keyhold.event_loop import run as run_on_loop
from keyhold.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark passphrase 0"


@dataclass(frozen=True)
class HashOnlyResult:
    calls: int
    seconds: float
    cpu_seconds: float
    latencies: tuple[float, ...]  # seconds, of the calls completed in the window
    peak_rss_mb: float


async def _verify_under_load(
    hasher: Argon2Hasher, concurrency: int, warmup: float, seconds: float
) -> HashOnlyResult:
    password_hash = await hasher.hash(PASSWORD)
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds
    latencies: list[float] = []

    async def slot() -> None:
        while (sent := loop.time()) < end:
            if not await hasher.verify(password_hash, PASSWORD):
                raise RuntimeError("the benchmark password did not verify")
            done = loop.time()
            if start <= done < end:
                latencies.append(done - sent)

    slots = [asyncio.create_task(slot()) for _ in range(concurrency)]
    await asyncio.sleep(max(0.0, start - loop.time()))
    cpu_started, wall_started = time.process_time(), loop.time()
    await asyncio.sleep(max(0.0, end - loop.time()))
    cpu, wall = time.process_time() - cpu_started, loop.time() - wall_started
    await asyncio.gather(*slots)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return HashOnlyResult(len(latencies), wall, cpu, tuple(latencies), peak_kib * 1024 / 1e6)


async def _main(args: argparse.Namespace) -> HashOnlyResult:
    settings = Settings(_env_file=None)
    hasher = Argon2Hasher(
        Argon2Parameters(
            settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism
        ),
        workers=settings.password_hash_workers,
    )
    try:
        return await _verify_under_load(hasher, args.concurrency, args.warmup, args.seconds)
    finally:
        hasher.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hash_only")
    parser.add_argument("--concurrency", type=int, default=32, help="verifications outstanding")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cpus", help="comma-separated CPUs to run on (every thread)")
    args = parser.parse_args()
    if args.cpus:  # before any thread starts: threads inherit it
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    event_loop = Settings(_env_file=None).event_loop
    result = run_on_loop(_main(args), event_loop)
    print(json.dumps(result.__dict__), flush=True)


async def hash_only_processes(
    environment: Mapping[str, str],
    cpus: frozenset[int] | None,
    processes: int,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> list[HashOnlyResult]:
    """`processes` hash-only processes at once (as many as the server has workers),
    sharing `concurrency` outstanding verifications, with `environment` (the server's)
    and on `cpus` (the server's)."""
    share, extra = divmod(concurrency, processes)
    children = []
    for index in range(processes):
        outstanding = max(1, share + (1 if index < extra else 0))
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "bench.hash_only", "--concurrency", str(outstanding)),
                *("--warmup", str(warmup), "--seconds", str(seconds)),
                *(() if cpus is None else ("--cpus", ",".join(map(str, sorted(cpus))))),
                env=dict(environment),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
        )
    results = []
    for child in children:
        output, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"bench.hash_only exited with code {child.returncode}")
        fields = json.loads(output.decode().strip().splitlines()[-1])
        fields["latencies"] = tuple(fields["latencies"])
        results.append(HashOnlyResult(**fields))
    return results


if __name__ == "__main__":
    main()
