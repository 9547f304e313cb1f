"""Running Node from tests: the packages a test needs (installed by `make test` with
`npm ci`), skipped without Node except under CI, where a missing Node fails."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def node_for(*packages: Path) -> str:
    """The `node` executable, when it and every package's dependencies are installed."""
    node = shutil.which("node")
    if node is None or not all((package / "node_modules").is_dir() for package in packages):
        if os.environ.get("CI"):
            pytest.fail("CI needs Node and the packages `make test` installs (npm ci)")
        pytest.skip("Node or the Node packages are not installed")
    return node


async def run_node(
    node: str, *args: str, cwd: Path, env: dict[str, str], within_seconds: float = 120
) -> tuple[int, str]:
    """`node ARGS` in `cwd` to completion: exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        node,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=within_seconds)
    assert process.returncode is not None
    return process.returncode, out.decode()
