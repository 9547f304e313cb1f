"""Keyhold's HTTP endpoints through Node clients nobody here wrote (`tests/node/`): jose
verifies a token through the discovery document and openid-client runs the
client-credentials grant. `make test` installs them (`npm ci --prefix tests/node`);
under CI a missing Node or missing packages fail the test rather than skip it."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.support.cli import free_port
from tests.support.servers import running_server, settings_for

NODE_TESTS = Path(__file__).resolve().parents[1] / "node"


def _node() -> str:
    node = shutil.which("node")
    installed = (NODE_TESTS / "node_modules" / "openid-client").is_dir()
    if node is None or not installed:
        if os.environ.get("CI"):
            pytest.fail("CI needs Node and `npm ci --prefix tests/node` (make test runs it)")
        pytest.skip("Node or the packages of tests/node are not installed")
    return node


async def test_node_clients_use_the_http_endpoints(tmp_path: Path) -> None:
    node = _node()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = settings_for(tmp_path, http_address=f"127.0.0.1:{port}", issuer=issuer)
    async with running_server(settings) as (app, _):
        account, secret = await app.identity.service_accounts.create("node", ["audit.read"])
        env = {
            **os.environ,
            "KEYHOLD_ISSUER": issuer,
            "KEYHOLD_CLIENT_ID": account.client_id,
            "KEYHOLD_CLIENT_SECRET": secret,
        }
        process = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "oauth.test.mjs",
            cwd=NODE_TESTS,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, out.decode()
    assert "# pass 3" in out.decode(), out.decode()
