"""Argon2id password hashing (argon2-cffi) in a bounded thread pool.

The C code releases the GIL, so hashing runs beside the event loop; the pool's size
bounds how many cores logins may take, and its threads run at a lower scheduling
priority (Linux nice is per thread), so that under a login storm the event loop still
gets the CPU first and cheap calls keep their latency; logins take the cores left over.
`activity` hears when hashing starts and when each job has ended on its thread
(`keyhold.thread_scheduling.LoopFirst` schedules the other threads by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHING_NICENESS = 10
T = TypeVar("T")


def lower_thread_priority(niceness: int = HASHING_NICENESS) -> None:
    """Make the calling thread yield the CPU to the process's other threads."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class HashingActivity(Protocol):
    def hashing_started(self) -> None: ...

    def hashing_finished(self) -> None: ...


def _tell(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """From the hashing thread: `callback` on the loop, unless the loop has closed (a
    job that outlived the server's shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """Default: OWASP's recommended Argon2id profile (m=19 MiB, t=2, p=1)."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


class Argon2Hasher:
    def __init__(
        self,
        parameters: Argon2Parameters,
        workers: int,
        *,
        activity: HashingActivity | None = None,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="argon2",
            initializer=lower_thread_priority,
        )
        self._activity = activity
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._on_pool(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._on_pool(self._verify, password_hash, password)

    async def _on_pool(self, work: Callable[..., T], *args: str) -> T:
        job = self._pool.submit(work, *args)
        activity = self._activity
        if activity is not None:
            activity.hashing_started()
            loop = asyncio.get_running_loop()
            # Ended when the thread is done with it, even if its caller was cancelled before.
            job.add_done_callback(lambda _: _tell(loop, activity.hashing_finished))
        return await asyncio.wrap_future(job)

    async def verify_dummy(self, password: str) -> None:
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
