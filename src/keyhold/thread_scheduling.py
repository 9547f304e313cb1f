"""Which of a server process's threads gets the CPU first: the event loop's.

Per call, gRPC's completion-queue poller thread wakes several times, and now and then
EventEngine's threads and the SQLite driver's do too. As ordinary (SCHED_OTHER) threads
each of them, once woken, preempts the event loop's thread where it stands: about
thirteen context switches per cheap RPC when they share a core. `loop-first` runs
every other thread of the process SCHED_BATCH, which Linux never lets preempt a
thread on waking: a woken helper runs when the loop's thread waits, or at the
scheduler's tick, and then finds more work to do at once. A cheap RPC costs about
30% less server CPU (docs/benchmarks.md). Password hashing runs SCHED_IDLE (see
`argon2_hasher`), so that gRPC's batch threads still preempt it during a login storm.

Threads start at any time (EventEngine grows its pool, the SQLite driver has one per
connection), so the threads are swept every few seconds; the sweep is a directory
listing and a system call per thread. `os-default` leaves every thread as started.
Not on Linux, both mean `os-default`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Literal

ThreadScheduling = Literal["loop-first", "os-default"]
DEFAULT_SCHEDULING: ThreadScheduling = "loop-first"
SWEEP_SECONDS = 5.0
_TASKS = "/proc/self/task"


def supported() -> bool:
    return hasattr(os, "SCHED_BATCH") and os.path.isdir(_TASKS)


def in_effect(scheduling: ThreadScheduling) -> ThreadScheduling:
    return scheduling if supported() else "os-default"


def batch_helper_threads(loop_thread: int) -> int:
    """Run every thread of this process but `loop_thread` that is SCHED_OTHER as
    SCHED_BATCH; those given another policy (hashing's SCHED_IDLE) keep it. Returns how
    many threads changed."""
    changed = 0
    for name in os.listdir(_TASKS):
        thread = int(name)
        if thread == loop_thread:
            continue
        with contextlib.suppress(OSError):  # it ended since the listing, or not permitted
            if os.sched_getscheduler(thread) == os.SCHED_OTHER:
                os.sched_setscheduler(thread, os.SCHED_BATCH, os.sched_param(0))
                changed += 1
    return changed


async def keep_helper_threads_batched(every_seconds: float = SWEEP_SECONDS) -> None:
    """From the event loop's thread: sweep its process's other threads until cancelled."""
    loop_thread = threading.get_native_id()
    while True:
        batch_helper_threads(loop_thread)
        await asyncio.sleep(every_seconds)
