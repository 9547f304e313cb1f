"""Which of a server process's threads gets the CPU first: the event loop's.

Per call, gRPC's completion-queue poller thread wakes several times, and now and then
EventEngine's threads and the SQLite driver's do too. As ordinary (SCHED_OTHER) threads
each of them, once woken, preempts the event loop's thread where it stands: about
thirteen context switches per cheap RPC when they share a core. `loop-first` runs
every other thread of the process SCHED_BATCH, which Linux never lets preempt a
thread on waking: a woken helper runs when the loop's thread waits, or at the
scheduler's tick, and then finds more work to do at once. A cheap RPC costs about
30% less server CPU (docs/benchmarks.md).

While a password is being hashed the helpers run SCHED_OTHER again, until the hashing
has been over for a second: gRPC's poller must preempt the (nice 10) hashing threads to
keep cheap calls quick during a login storm, and a batch thread preempts no ordinary
one. The hashing threads stay ordinary threads at nice 10, so logins still get their
share of a CPU that cheap calls keep busy (as SCHED_IDLE threads they got none).

Threads start at any time (EventEngine grows its pool, the SQLite driver has one per
connection), so the threads are swept every few seconds; the sweep is a directory
listing and a system call per thread. `os-default` leaves every thread as started.
Not on Linux, both mean `os-default`. Neither policy needs a privilege.
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
CALM_SECONDS = 1.0  # after the last hash, before the helpers go back to SCHED_BATCH
_TASKS = "/proc/self/task"


def supported() -> bool:
    return hasattr(os, "SCHED_BATCH") and os.path.isdir(_TASKS)


def in_effect(scheduling: ThreadScheduling) -> ThreadScheduling:
    return scheduling if supported() else "os-default"


def _move_helper_threads(loop_thread: int, source: int, target: int) -> int:
    """Every thread of this process but `loop_thread` whose policy is `source` gets
    `target`; returns how many changed."""
    changed = 0
    for name in os.listdir(_TASKS):
        thread = int(name)
        if thread == loop_thread:
            continue
        with contextlib.suppress(OSError):  # it ended since the listing, or not permitted
            if os.sched_getscheduler(thread) == source:
                os.sched_setscheduler(thread, target, os.sched_param(0))
                changed += 1
    return changed


def batch_helper_threads(loop_thread: int) -> int:
    """SCHED_OTHER → SCHED_BATCH for every thread but `loop_thread`; those given another
    policy keep it. Returns how many threads changed."""
    return _move_helper_threads(loop_thread, os.SCHED_OTHER, os.SCHED_BATCH)


def unbatch_helper_threads(loop_thread: int) -> int:
    """SCHED_BATCH → SCHED_OTHER for every thread but `loop_thread`."""
    return _move_helper_threads(loop_thread, os.SCHED_BATCH, os.SCHED_OTHER)


class LoopFirst:
    """The `loop-first` policy of one process, made and driven on its event loop's
    thread: the helper threads batch, except while passwords are being hashed
    (`hashing_started`, `hashing_finished`, which the hasher calls)."""

    def __init__(self, calm_seconds: float = CALM_SECONDS) -> None:
        self._calm_seconds = calm_seconds
        self._loop_thread = threading.get_native_id()
        self._hashing = 0
        self._batched = True
        self._calm: asyncio.TimerHandle | None = None

    @property
    def batched(self) -> bool:
        return self._batched

    def sweep(self) -> None:
        if self._batched:
            batch_helper_threads(self._loop_thread)

    async def keep_sweeping(self, every_seconds: float = SWEEP_SECONDS) -> None:
        """Sweep now and every `every_seconds` until cancelled."""
        while True:
            self.sweep()
            await asyncio.sleep(every_seconds)

    def hashing_started(self) -> None:
        self._hashing += 1
        if self._calm is not None:
            self._calm.cancel()
            self._calm = None
        if self._batched:
            self._batched = False
            unbatch_helper_threads(self._loop_thread)

    def hashing_finished(self) -> None:
        self._hashing -= 1
        if not self._hashing and not self._batched:
            loop = asyncio.get_running_loop()
            self._calm = loop.call_later(self._calm_seconds, self._calmed)

    def _calmed(self) -> None:
        self._calm = None
        if not self._hashing:
            self._batched = True
            batch_helper_threads(self._loop_thread)
