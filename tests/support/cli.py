"""Running the `keyhold` command line from tests."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, within_seconds: float = 30
) -> tuple[int, str]:
    """`python -m keyhold.cli ARGS` to completion: exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keyhold.cli",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=within_seconds)
    assert process.returncode is not None
    return process.returncode, out.decode()
