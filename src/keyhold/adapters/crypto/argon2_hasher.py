"""Argon2id password hashing (argon2-cffi) in a bounded thread pool.

The C code releases the GIL, so hashing runs beside the event loop; the pool's size
bounds how many cores logins may take, and its threads run at a lower scheduling
priority (Linux nice is per thread), so that under a login storm the event loop still
gets the CPU first and cheap calls keep their latency; logins take the cores left over.
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
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHING_NICENESS = 10
T = TypeVar("T")


def lower_thread_priority(niceness: int = HASHING_NICENESS) -> None:
    """Make the calling thread yield the CPU to the process's other threads: `niceness`
    above the nice it was started with (the thread that started it)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """Default: OWASP's recommended Argon2id profile (m=19 MiB, t=2, p=1)."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


class Argon2Hasher:
    def __init__(self, parameters: Argon2Parameters, workers: int) -> None:
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
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._on_pool(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._on_pool(self._verify, password_hash, password)

    async def _on_pool(self, work: Callable[..., T], *args: str) -> T:
        return await asyncio.wrap_future(self._pool.submit(work, *args))

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
