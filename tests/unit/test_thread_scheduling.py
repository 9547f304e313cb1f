"""loop-first: every thread of the process but the event loop's runs SCHED_BATCH, except
while passwords are being hashed."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from keyhold import thread_scheduling
from keyhold.thread_scheduling import LoopFirst, batch_helper_threads


@contextmanager
def _waiting_thread(policy: int | None = None) -> Iterator[int]:
    """A thread that waits until the block ends; its native id."""
    started, done = threading.Event(), threading.Event()
    ids: list[int] = []

    def wait() -> None:
        if policy is not None:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        ids.append(threading.get_native_id())
        started.set()
        done.wait()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    started.wait()
    try:
        yield ids[0]
    finally:
        done.set()
        thread.join()


def test_helper_threads_run_batch_and_the_loop_thread_is_untouched() -> None:
    loop_thread = threading.get_native_id()
    with _waiting_thread() as helper, _waiting_thread(os.SCHED_IDLE) as hashing:
        assert os.sched_getscheduler(helper) == os.SCHED_OTHER
        assert batch_helper_threads(loop_thread) >= 1
        assert os.sched_getscheduler(helper) == os.SCHED_BATCH
        assert os.sched_getscheduler(hashing) == os.SCHED_IDLE  # another policy is kept
        assert os.sched_getscheduler(loop_thread) == os.SCHED_OTHER
        assert batch_helper_threads(loop_thread) == 0  # nothing left to change


async def _until(thread: int, policy: int) -> int:
    for _ in range(40):
        if os.sched_getscheduler(thread) == policy:
            break
        await asyncio.sleep(0.05)
    return os.sched_getscheduler(thread)


async def test_threads_started_later_are_batched_by_a_later_sweep() -> None:
    sweeping = asyncio.create_task(LoopFirst().keep_sweeping(every_seconds=0.05))
    try:
        await asyncio.sleep(0.1)
        with _waiting_thread() as late:
            assert await _until(late, os.SCHED_BATCH) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this test's loop thread
    finally:
        sweeping.cancel()


async def test_helpers_are_ordinary_while_passwords_are_hashed() -> None:
    policy = LoopFirst(calm_seconds=0.2)
    with _waiting_thread() as helper:
        policy.sweep()
        assert os.sched_getscheduler(helper) == os.SCHED_BATCH
        policy.hashing_started()
        policy.hashing_started()
        assert os.sched_getscheduler(helper) == os.SCHED_OTHER  # at once
        policy.hashing_finished()
        policy.sweep()  # a sweep while hashing batches nothing
        assert os.sched_getscheduler(helper) == os.SCHED_OTHER
        policy.hashing_finished()
        await asyncio.sleep(0.1)
        policy.hashing_started()  # before the calm period is over: stays ordinary
        policy.hashing_finished()
        await asyncio.sleep(0.15)
        assert os.sched_getscheduler(helper) == os.SCHED_OTHER
        assert await _until(helper, os.SCHED_BATCH) == os.SCHED_BATCH  # calm: batch again
        assert policy.batched
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_without_linux_scheduling_both_choices_mean_the_os_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert thread_scheduling.in_effect("loop-first") == "loop-first"
    monkeypatch.delattr(os, "SCHED_BATCH")
    assert thread_scheduling.in_effect("loop-first") == "os-default"
    assert thread_scheduling.in_effect("os-default") == "os-default"
