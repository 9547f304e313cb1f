"""The hashing pool: off the event loop's thread, and below it in scheduling priority."""

from __future__ import annotations

import asyncio
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


def test_the_hashing_threads_yield_to_a_loop_that_is_itself_niced() -> None:
    """The hashing threads' nice is the loop thread's plus HASHING_NICENESS: never above
    it, for a server started with `nice`."""
    seen: dict[str, int] = {}

    def loop_thread_at_nice_3() -> None:
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, _nice_of_thread(me) + 3)
        seen["loop"] = _nice_of_thread(me)
        hasher = Argon2Hasher(FAST, workers=1)
        try:
            asyncio.run(hasher.hash("a long enough passphrase"))
            (hashing,) = [t for t in threading.enumerate() if t.name.startswith("argon2")]
            seen["hashing"] = _nice_of_thread(hashing.native_id or 0)
        finally:
            hasher.close()

    thread = threading.Thread(target=loop_thread_at_nice_3)
    thread.start()
    thread.join()
    assert seen["hashing"] == seen["loop"] + HASHING_NICENESS
