"""The hashing pool: off the event loop's thread, and below it in scheduling priority."""

from __future__ import annotations

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


def _hashing_threads() -> set[int]:
    return {t.native_id or 0 for t in threading.enumerate() if t.name.startswith("argon2")}


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


@pytest.mark.parametrize(
    ("idle_threads", "policy"), [(False, os.SCHED_OTHER), (True, os.SCHED_IDLE)]
)
async def test_idle_threads_hash_under_sched_idle(idle_threads: bool, policy: int) -> None:
    before = _hashing_threads()  # the pools of earlier tests may linger
    hasher = Argon2Hasher(FAST, workers=1, idle_threads=idle_threads)
    try:
        await hasher.hash("a long enough passphrase")
        ids = _hashing_threads() - before
        assert ids, "no hashing thread"
        assert {os.sched_getscheduler(i) for i in ids} == {policy}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the event loop is untouched
    finally:
        hasher.close()
