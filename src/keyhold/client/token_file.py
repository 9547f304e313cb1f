"""A token kept in a file that another process rotates: a Kubernetes projected
service-account token, a SPIFFE JWT-SVID written by a workload agent."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

# Keyhold accepts subject tokens of at most this many characters.
MAX_TOKEN_BYTES = 16384


class TokenFile:
    """`current()` is the file's content, stripped of surrounding whitespace. The file
    is read again only when its identity, size or modification time changed since the
    last read (Kubernetes replaces the file through a symlink swap, which changes all
    three); otherwise the content read last is returned. File access runs in a worker
    thread, never on the event loop."""

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._seen: tuple[int, int, int, int] | None = None
        self._content = ""
        self.reads = 0  # times the file was read, for observability

    async def current(self) -> str:
        return await asyncio.to_thread(self._current)

    def _current(self) -> str:
        # Stat before reading: the content read is at least as new as the stat kept,
        # so a change that races the read is seen again at the next call.
        status = os.stat(self._path)
        seen = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if seen != self._seen:
            with self._path.open("rb") as file:
                data = file.read(MAX_TOKEN_BYTES + 1)
            self.reads += 1
            if len(data) > MAX_TOKEN_BYTES:
                raise ValueError(f"{self._path} holds more than {MAX_TOKEN_BYTES} bytes")
            content = data.decode("ascii").strip()
            if not content:
                raise ValueError(f"{self._path} is empty")
            self._content, self._seen = content, seen
        return self._content
