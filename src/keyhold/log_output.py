"""Where JSON log lines go: a structlog logger that writes the rendered lines in batches.

A line logged on an event loop waits up to `FLUSH_AFTER_SECONDS` for others and leaves
with them in one write; a line logged anywhere else is written at once, after any that
wait. Writes hold whole lines. A pipe that other processes also write to (the workers'
shared standard error) gets no write larger than PIPE_BUF, which the kernel keeps in one
piece, so lines of different workers never interleave. `flush_lines` writes what waits;
the server calls it when it stops, and it runs at exit and before a fork.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import select
import stat
import threading
import weakref
from typing import Any, BinaryIO

FLUSH_AFTER_SECONDS = 0.01  # the longest a line waits to be written
PIPE_BUF = select.PIPE_BUF
LARGEST_WRITE = 64 * 1024


class _Sharing:
    shared = False  # other processes write to the same output (workers)


def share_output() -> None:
    """This process is one of several writing to the same output: a worker."""
    _Sharing.shared = True


def write_limit(output: BinaryIO) -> int:
    """The largest write of batched lines to `output`: PIPE_BUF for a pipe (or anything
    not a regular file) shared with other processes, whose writes could otherwise
    interleave with ours mid-line."""
    if not _Sharing.shared:
        return LARGEST_WRITE
    try:
        regular = stat.S_ISREG(os.fstat(output.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation)
        regular = False
    return LARGEST_WRITE if regular else PIPE_BUF


class BatchedLineLogger:
    """A structlog logger for a renderer that returns bytes: each line is written to
    `output` as described above. One instance serves every logger of a configuration."""

    def __init__(self, output: BinaryIO) -> None:
        self._output = output
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._size = 0
        self._flushing_loop: asyncio.AbstractEventLoop | None = None
        _loggers.add(self)

    def msg(self, message: bytes) -> None:
        line = message + b"\n"
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._pending and (
                loop is not self._flushing_loop or self._size + len(line) > LARGEST_WRITE
            ):
                self._write_pending()  # a full batch, or one whose loop is not running
            if loop is None:
                self._write(line)
                return
            if not self._pending:
                loop.call_later(FLUSH_AFTER_SECONDS, self.flush)
                self._flushing_loop = loop
            self._pending.append(line)
            self._size += len(line)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        """Write every line that waits, now."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._size = 0
        self._flushing_loop = None
        if self._output.closed:  # by whoever opened it: these lines have nowhere to go
            return
        limit = write_limit(self._output)
        chunk: list[bytes] = []
        size = 0
        for line in pending:
            if chunk and size + len(line) > limit:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        self._output.write(data)
        self._output.flush()

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent writes what waited; another thread may have
        held the lock."""
        self._lock = threading.Lock()
        self._pending.clear()
        self._size = 0


class BatchedLineLoggerFactory:
    """structlog's `logger_factory` for `output`: every logger writes through one
    BatchedLineLogger, so that their lines share its batches."""

    def __init__(self, output: BinaryIO) -> None:
        self._logger = BatchedLineLogger(output)

    def __call__(self, *_args: Any) -> BatchedLineLogger:
        return self._logger


_loggers: weakref.WeakSet[BatchedLineLogger] = weakref.WeakSet()


def flush_lines() -> None:
    """Write every line that waits, now: when the server stops, at exit, before a fork."""
    for logger in list(_loggers):
        logger.flush()


def _forget_after_fork() -> None:
    for logger in list(_loggers):
        logger._forget_after_fork()


atexit.register(flush_lines)
os.register_at_fork(before=flush_lines, after_in_child=_forget_after_fork)
