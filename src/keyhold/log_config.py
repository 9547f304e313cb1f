"""structlog set-up: JSON lines in production, readable console lines in development.

JSON is serialized by orjson straight to bytes: at one line per RPC, the renderer is most
of a log call's cost, and orjson takes about half of it off (docs/benchmarks.md). The
per-RPC line goes further and skips structlog's processor chain (`event_writer`).
"""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import stat
import sys
import time
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any, BinaryIO, Literal

import orjson
import structlog

EventWriter = Callable[..., None]  # keyword arguments: the line's fields
FLUSH_AFTER_SECONDS = 0.01  # the longest a batched line waits to be written
PIPE_BUF = 4096  # on Linux, the largest write a pipe keeps in one piece
LARGEST_WRITE = 64 * 1024


class _UtcTimestamp:
    """`2026-11-22T01:55:03.123456Z`, as structlog's ISO/UTC stamper writes it, with the
    seconds formatted once per second rather than through a datetime per line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = second
        return self._prefix + str(micro + 1_000_000)[1:] + "Z"  # six digits, no format spec


utc_timestamp = _UtcTimestamp()


def _add_timestamp(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = utc_timestamp()
    return event_dict


class _Config:
    """What `configure_logging` last set up; `event_writer` trusts it only while it is
    still structlog's configuration (tests reconfigure structlog, to capture logs)."""

    json_output: BinaryIO | None = None
    level = logging.INFO
    processors: list[Any] | None = None
    renderer: Any = None
    shared = False  # other processes write to the same output (workers)


def share_output() -> None:
    """This process is one of several writing to the same output: a worker."""
    _Config.shared = True


def _write_limit(output: BinaryIO) -> int:
    """The largest write of batched lines. Writes to a pipe that other processes also
    write to must not exceed PIPE_BUF, or their lines could interleave mid-line; a
    regular file, or an output of this process alone, takes a whole batch at once
    (in a server, each write costs far more than its system call: docs/benchmarks.md)."""
    if not _Config.shared:
        return LARGEST_WRITE
    try:
        regular = stat.S_ISREG(os.fstat(output.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation)
        regular = False
    return LARGEST_WRITE if regular else PIPE_BUF


def configure_logging(
    log_format: Literal["json", "console"],
    level: str = "info",
    *,
    output: BinaryIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """Log to `output` (default: standard error). `cache_loggers=False` lets a later
    `configure_logging` reach loggers already used (tests)."""
    renderer: structlog.typing.Processor
    factory: Callable[..., Any]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    _Config.level = numeric_level
    if log_format == "json":
        binary = sys.stderr.buffer if output is None else output
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(binary)
        _Config.json_output = binary
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        text = (
            sys.stderr
            if output is None
            else io.TextIOWrapper(output, encoding="utf-8", write_through=True)
        )
        factory = structlog.PrintLoggerFactory(text)
        _Config.json_output = None
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_timestamp,
        structlog.processors.format_exc_info,
        renderer,
    ]
    _Config.processors, _Config.renderer = processors, renderer
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=cache_loggers,
    )


def event_writer(event: str, logger_name: str) -> EventWriter | None:
    """A writer of one frequent info-level event, or None when info is filtered out.

    With JSON output the line is the one structlog would write (the same keys, the
    context variables bound when the writer is made, one write per line) without its
    processor chain. Otherwise it is structlog's own `info`.
    """
    processors: list[Any] = structlog.get_config()["processors"]
    # The same list, still ending in our renderer (capture_logs empties it in place).
    ours = processors is _Config.processors and processors[-1:] == [_Config.renderer]
    if ours and _Config.level > logging.INFO:
        return None
    output = _Config.json_output if ours else None
    if output is None:
        info = structlog.get_logger(logger_name).info

        def through_structlog(**fields: Any) -> None:
            info(event, **fields)

        return through_structlog
    bound = structlog.contextvars.get_contextvars()
    lines = _LineBatcher(output, _write_limit(output))
    dumps = orjson.dumps

    def write_json(**fields: Any) -> None:
        line = {**bound, **fields, "event": event, "level": "info"}
        line["timestamp"] = utc_timestamp()
        lines.add(dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    return write_json


class _LineBatcher:
    """Lines gathered for up to `FLUSH_AFTER_SECONDS` and written together, in writes of
    whole lines of at most `limit` bytes: one system call for many RPCs. (Batching per
    event-loop iteration gave one write per line: an iteration rarely completes two
    calls.)"""

    def __init__(self, output: BinaryIO, limit: int) -> None:
        self._output = output
        self._limit = limit
        self._pending: list[bytes] = []
        self._size = 0
        _batchers.add(self)

    def add(self, line: bytes) -> None:
        if self._size + len(line) > self._limit:
            self.flush()
        if not self._pending:
            try:
                asyncio.get_running_loop().call_later(FLUSH_AFTER_SECONDS, self.flush)
            except RuntimeError:  # no event loop: write it now
                self._write(line)
                return
        self._pending.append(line)
        self._size += len(line)

    def flush(self) -> None:
        if self._pending:
            chunk = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        self._output.write(chunk)
        self._output.flush()


_batchers: weakref.WeakSet[_LineBatcher] = weakref.WeakSet()


def flush_lines() -> None:
    """Write every batched line now: when the server stops, and at exit."""
    for batcher in list(_batchers):
        batcher.flush()


atexit.register(flush_lines)
