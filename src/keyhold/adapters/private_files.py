"""Files and directories the service keeps to itself: directories 0700, files 0600.

They are created with those modes whatever the process's umask (a mode given to
`mkdir` or `open` is masked by it; a `chmod` afterwards is not), and one found with a
looser mode is tightened, with a warning in the log (an error when it belongs to
another user and cannot be).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
# SQLite's own files beside a database; it creates them with the database file's mode.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_directory(path: Path) -> None:
    """`path` as a 0700 directory: made (with any missing parents, each 0700) or
    tightened."""
    missing: list[Path] = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIRECTORY)
        except FileExistsError:  # made meanwhile by another process
            pass
        else:
            os.chmod(directory, PRIVATE_DIRECTORY)
    _tighten(path, PRIVATE_DIRECTORY)


def private_file(path: Path) -> None:
    """`path` as a 0600 file: made empty if absent, or tightened."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
        return
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    finally:
        os.close(descriptor)


def write_private_file(path: Path, text: str) -> None:
    """A new 0600 file holding `text`; FileExistsError if `path` exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(descriptor, PRIVATE_FILE)
        handle.write(text)


def private_sqlite_database(database: Path) -> None:
    """The database file 0600 before SQLite opens it (so that the sidecar files SQLite
    creates take that mode), its directory made 0700 if missing, and any sidecar files
    already there tightened."""
    if not database.parent.exists():
        private_directory(database.parent)
    private_file(database)
    for suffix in SQLITE_SIDECARS:
        sidecar = database.with_name(database.name + suffix)
        if sidecar.exists():
            _tighten(sidecar, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    found = stat.S_IMODE(path.stat().st_mode)
    if found & ~mode:
        try:
            os.chmod(path, mode)
        except PermissionError:  # another user's (a mounted volume's root, say)
            log.error("permissions_not_tightened", path=str(path), found=f"{found:o}")
            return
        log.warning("permissions_tightened", path=str(path), found=f"{found:o}", now=f"{mode:o}")
