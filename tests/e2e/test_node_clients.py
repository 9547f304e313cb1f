"""Keyhold's HTTP endpoints through Node clients nobody here wrote (`tests/node/`): jose
verifies a token through the discovery document and openid-client runs the
client-credentials grant. `make test` installs them (`npm ci --prefix tests/node`);
under CI a missing Node or missing packages fail the test rather than skip it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.cli import free_port
from tests.support.node import ROOT, node_for, run_node
from tests.support.servers import running_server, settings_for

NODE_TESTS = ROOT / "tests" / "node"


async def test_node_clients_use_the_http_endpoints(tmp_path: Path) -> None:
    node = node_for(NODE_TESTS)
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
        code, out = await run_node(node, "--test", "oauth.test.mjs", cwd=NODE_TESTS, env=env)
    assert code == 0, out
    assert "# pass 3" in out, out
