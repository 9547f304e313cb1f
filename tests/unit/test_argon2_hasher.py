"""The hashing pool: off the event loop's thread, and below it in scheduling priority."""

from __future__ import annotations

import os
import threading

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
