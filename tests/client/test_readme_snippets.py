"""Every Python snippet in the README, pasted into a file and run as shown, against a
real Keyhold: configuration from environment variables, as the snippets read it. The
reports service snippet serves until stopped; it is called, then stopped."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import grpc

from keyhold.application.identity.api_resources import Definition
from tests.support.cli import free_port
from tests.support.node import node_for, run_node
from tests.support.servers import bearer, running_server, settings_for, signed_in

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


async def _run(path: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_every_python_snippet_runs_as_shown(tmp_path: Path) -> None:
    found = snippets()
    assert len(found) == 4, "a snippet was added or removed: run it here too"
    files = []
    for number, code in enumerate(found):
        path = tmp_path / f"snippet_{number}.py"
        path.write_text(code)
        files.append(path)
    async with running_server(settings_for(tmp_path / "server")) as (app, _):
        resources = app.identity.api_resources
        await resources.create(
            "reports",
            Definition(
                "Reports",
                "reports.internal",
                {"reports.read": "read reports"},
                {"reports:viewer": frozenset({"reports.read"})},
            ),
        )
        user_token, user = await signed_in(app, "ada@example.com")
        await resources.grant_roles(user, "api-resources/reports", ["reports:viewer"])
        account, secret = await app.identity.service_accounts.create("front", ["audit.read"])
        await resources.set_exchange_grant(account.name, "api-resources/reports", ["reports.read"])
        reports_address = f"127.0.0.1:{free_port()}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_")},
            "TARGET": f"127.0.0.1:{app.port}",
            "CLIENT_ID": account.client_id,
            "CLIENT_SECRET": secret,
            "USER_TOKEN": user_token,
            "REPORTS_ADDRESS": reports_address,
        }

        calling, reports, on_behalf, stubs = files
        assert (await _run(calling, env)).split()[0] == account.name
        assert "a token for reports.internal" in await _run(on_behalf, env)
        assert (await _run(stubs, env)).startswith("['")

        server = await asyncio.create_subprocess_exec(
            sys.executable,
            str(reports),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert server.stdout is not None
            line = await asyncio.wait_for(server.stdout.readline(), timeout=30)
            assert line.strip() == b"serving", line
            await resources.grant_scopes(account.name, "api-resources/reports", ["reports.read"])
            issued = await app.identity.service_accounts.issue_token(
                account.client_id, secret, [], "reports.internal"
            )
            async with grpc.aio.insecure_channel(reports_address) as channel:
                answer = await channel.unary_unary("/reports.Reports/Get")(
                    b"", metadata=bearer(issued.token.token)
                )
            assert answer == f"report for {account.name}".encode()
        finally:
            server.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.wait(), timeout=15)


def js_snippets() -> list[str]:
    return re.findall(r"```js\n(.*?)```", README.read_text(), re.S)


async def _run_snippet(node: str, package: Path, code: str, env: dict[str, str]) -> str:
    """`code` as a module of `package` (so that its imports resolve to the package's
    locked dependencies, and the package to itself), then removed."""
    path = package / f".readme-snippet-{uuid.uuid4().hex}.mjs"
    path.write_text(code)
    try:
        status, out = await run_node(node, str(path), cwd=package, env=env, within_seconds=60)
    finally:
        path.unlink()
    assert status == 0, out
    return out


async def test_every_javascript_snippet_runs_as_shown(tmp_path: Path) -> None:
    packages = (ROOT / "tests" / "node", ROOT / "clients" / "typescript")
    node = node_for(*packages)
    found = js_snippets()
    assert len(found) == 2, "a snippet was added or removed: run it here too"
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = settings_for(tmp_path, http_address=f"127.0.0.1:{port}", issuer=issuer)
    async with running_server(settings) as (app, _):
        account, secret = await app.identity.service_accounts.create("node", ["audit.read"])
        env = {
            **os.environ,
            "ISSUER": issuer,
            "TARGET": f"127.0.0.1:{app.port}",
            "CLIENT_ID": account.client_id,
            "CLIENT_SECRET": secret,
        }
        oidc, grpc_stubs = found
        assert (await _run_snippet(node, packages[0], oidc, env)).strip() == account.name
        assert (await _run_snippet(node, packages[1], grpc_stubs, env)).strip() == account.name
