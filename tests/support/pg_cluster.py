"""A throwaway PostgreSQL cluster of our own, to stop and start under a running server.

The shared PostgreSQL at 127.0.0.1:5432 must not be disturbed, so a fault test that
needs the database to really go away (its postmaster stopped, every backend gone, the
port closed) runs its own: `initdb` into a temporary directory, `pg_ctl start` on a free
loopback port, `stop()` and `start()` at will. initdb refuses to run as root; as root the
server binaries run as the `postgres` system user (`runuser`).

Without the server binaries the test skips, or fails under CI, as for the shared server.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.cli import free_port

START_TIMEOUT_SECONDS = 60


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"a throwaway PostgreSQL cluster is required under CI: {reason}")
    pytest.skip(f"no throwaway PostgreSQL cluster: {reason}")


class ThrowawayCluster:
    def __init__(self, bin_dir: Path, directory: Path, run_as: str | None) -> None:
        self._bin = bin_dir
        self._dir = directory
        self._run_as = run_as
        self.port = free_port()
        self.data = directory / "data"
        self.log = directory / "postgres.log"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        completed = subprocess.run(
            command,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
            cwd=self._dir,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            raise RuntimeError(f"{program} {' '.join(args)} failed:\n{output}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    async def init(self) -> None:
        await asyncio.to_thread(
            self._run, "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N"
        )

    async def start(self) -> None:
        options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=100"
        )
        await asyncio.to_thread(
            self._run, "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "start",
        )  # fmt: skip

    async def stop(self, mode: str = "fast") -> None:
        """`fast`: backends are terminated, open transactions roll back; `immediate`:
        every process quits at once, as in a crash (recovery runs at the next start)."""
        await asyncio.to_thread(self._run, "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@asynccontextmanager
async def throwaway_cluster() -> AsyncIterator[ThrowawayCluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        raise AssertionError("unreachable")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run initdb as")
        run_as = "postgres"
    directory = Path(tempfile.mkdtemp(prefix="keyhold-pg-"))
    if run_as is not None:
        shutil.chown(directory, run_as)
    cluster = ThrowawayCluster(bin_dir, directory, run_as)
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data / "postmaster.pid").exists():
                await cluster.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
