"""The event loop a server process runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import uvloop

T = TypeVar("T")
EventLoopName = Literal["uvloop", "asyncio"]

_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def run(main: Coroutine[Any, Any, T], event_loop: EventLoopName) -> T:
    """`asyncio.run(main)` on a new loop of the named kind."""
    with asyncio.Runner(loop_factory=_FACTORIES[event_loop]) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The running loop's kind, `uvloop` or `asyncio`, for the start-up log line."""
    loop = asyncio.get_running_loop()
    return "uvloop" if isinstance(loop, uvloop.Loop) else "asyncio"
