"""A server on loop-first: its helper threads batch until a password is hashed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.support.servers import running_server, settings_for


async def test_hashing_a_password_makes_the_helper_threads_ordinary(tmp_path: Path) -> None:
    done = threading.Event()
    helper = threading.Thread(target=done.wait, daemon=True)
    helper.start()
    try:
        async with running_server(settings_for(tmp_path)) as (app, _):
            assert app.loop_first is not None
            app.loop_first.sweep()
            assert os.sched_getscheduler(helper.native_id or 0) == os.SCHED_BATCH
            await app.identity.users.create(
                "hashing@example.com", "a long enough passphrase", "Hashing"
            )
            assert os.sched_getscheduler(helper.native_id or 0) == os.SCHED_OTHER
            assert not app.loop_first.batched  # until a second without hashing
    finally:
        done.set()
        helper.join()


async def test_os_default_leaves_the_threads_alone(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, thread_scheduling="os-default")
    async with running_server(settings) as (app, _):
        assert app.loop_first is None
