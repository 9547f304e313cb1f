"""What a worker process (`keyhold serve --workers N`) sets up before it serves."""

from __future__ import annotations

import os
import signal
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import structlog

from keyhold import log_output, workers
from keyhold.settings import Settings


class Exited(Exception):
    """`os._exit`, which ends the worker's body, as something a test can catch."""


@pytest.fixture
def signals_kept() -> Iterator[None]:
    """The worker resets SIGTERM, SIGINT and SIGHUP; the test process gets its own back."""
    saved = {
        signum: signal.getsignal(signum)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        structlog.contextvars.unbind_contextvars("worker")


@pytest.mark.usefixtures("signals_kept")
def test_a_worker_shares_its_output_and_names_itself_before_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its log lines then keep to whole-line writes of at most PIPE_BUF on a pipe the
    workers share, and carry the worker's index."""
    seen: dict[str, Any] = {}

    def serving(main: Coroutine[Any, Any, None], event_loop: str) -> None:
        main.close()  # `serve(settings)`, not run here
        seen["shared"] = log_output._Sharing.shared
        seen["worker"] = structlog.contextvars.get_contextvars().get("worker")

    def exit_(code: int) -> None:
        seen["exited"] = code
        raise Exited(code)

    monkeypatch.setattr(log_output._Sharing, "shared", False)
    monkeypatch.setattr("keyhold.event_loop.run", serving)
    monkeypatch.setattr(workers, "_die_with_supervisor", lambda supervisor: None)
    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(
        workers, "flush_lines", lambda: seen.setdefault("flushed", "exited" not in seen)
    )
    with pytest.raises(Exited) as exited:
        workers._run_worker(Settings(_env_file=None), 3, os.getpid())  # type: ignore[call-arg]
    assert exited.value.args == (0,)
    # os._exit runs no atexit hook: the worker writes its waiting log lines first.
    assert seen == {"shared": True, "worker": 3, "flushed": True, "exited": 0}
