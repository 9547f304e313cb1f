"""A directory as a witness: each signed checkpoint a file of its own, created once
(never overwritten, owner-only permissions, flushed to disk with its directory entry),
named by the sequence it anchors so that the files list in chain order. The directory
should live where the database's administrators cannot write (another volume, another
machine's mount); this code cannot enforce that, only never rewrite what is there."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

SUFFIX = ".jws"


class WitnessConflict(Exception):
    """A checkpoint file of that name holds something else: it is never overwritten."""


class DirectoryWitness:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @staticmethod
    def file_name(sequence: int, digest: bytes) -> str:
        return f"{sequence:020d}-{digest.hex()[:16]}{SUFFIX}"

    async def export(self, sequence: int, digest: bytes, signed: str) -> Path:
        """Writes `signed` (a checkpoint's JWS) once; the same checkpoint again is a
        no-op, different content under its name a WitnessConflict."""
        return await asyncio.to_thread(self._write, self.file_name(sequence, digest), signed)

    def _write(self, name: str, signed: str) -> Path:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._directory / name
        data = signed.encode("ascii")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.read_bytes() != data:
                raise WitnessConflict(f"{path} holds another checkpoint") from None
            return path
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new entry survives a crash too
        finally:
            os.close(directory)
        return path

    async def checkpoints(self) -> list[tuple[str, str]]:
        """(file name, signed checkpoint) of every checkpoint file, in name order."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[tuple[str, str]]:
        if not self._directory.is_dir():
            return []
        return [
            (path.name, path.read_text("ascii"))
            for path in sorted(self._directory.glob(f"*{SUFFIX}"))
        ]
