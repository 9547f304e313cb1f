"""The hashing pool: off the event loop's thread, and below it in scheduling priority."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from keyhold.adapters.crypto.argon2_hasher import (
    HASHING_NICENESS,
    Argon2Hasher,
    Argon2Parameters,
)

FAST = Argon2Parameters(memory_kib=7 * 1024, time_cost=1, parallelism=1)


def _nice_of_thread(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)


async def test_hashes_and_verifies_on_a_lower_priority_thread() -> None:
    hasher = Argon2Hasher(FAST, workers=1)
    try:
        hashed = await hasher.hash("a long enough passphrase")
        assert await hasher.verify(hashed, "a long enough passphrase")
        assert not await hasher.verify(hashed, "another passphrase entirely")
        ids = [t.native_id for t in threading.enumerate() if t.name.startswith("argon2")]
        assert ids, "no hashing thread"
        loop_nice = _nice_of_thread(threading.get_native_id())
        assert all(_nice_of_thread(i) == loop_nice + HASHING_NICENESS for i in ids if i)
        assert os.getpriority(os.PRIO_PROCESS, 0) == loop_nice  # the event loop is untouched
    finally:
        hasher.close()


class _Activity:
    def __init__(self) -> None:
        self.running = 0
        self.seen: list[int] = []

    def hashing_started(self) -> None:
        self.running += 1
        self.seen.append(self.running)

    def hashing_finished(self) -> None:
        assert threading.current_thread() is threading.main_thread()  # the loop's thread
        self.running -= 1
        self.seen.append(self.running)


async def test_the_activity_hears_of_every_job_until_its_thread_is_done() -> None:
    activity = _Activity()
    hasher = Argon2Hasher(FAST, workers=1, activity=activity)
    try:
        hashed = await hasher.hash("a long enough passphrase")
        checks = [hasher.verify(hashed, "a long enough passphrase") for _ in range(2)]
        assert await asyncio.gather(*checks) == [True, True]
        slow = asyncio.ensure_future(hasher.verify(hashed, "another passphrase entirely"))
        await asyncio.sleep(0)
        slow.cancel()  # the caller gives up; the thread still hashes to the end
        for _ in range(100):
            if not activity.running:
                break
            await asyncio.sleep(0.01)
        assert activity.seen == [1, 0, 1, 2, 1, 0, 1, 0], activity.seen
    finally:
        hasher.close()


def test_a_job_that_outlives_its_loop_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    activity = _Activity()
    hasher = Argon2Hasher(FAST, workers=1, activity=activity)
    started = threading.Event()

    async def start_and_leave() -> None:
        job = asyncio.ensure_future(hasher.hash("a long enough passphrase"))
        await asyncio.sleep(0)
        started.set()
        job.cancel()

    try:
        asyncio.run(start_and_leave())  # the loop closes while the hash still runs
        hasher._pool.shutdown(wait=True)
    finally:
        hasher.close()
    assert started.is_set()
    assert activity.seen == [1]  # its end had no loop left to hear it
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()]
