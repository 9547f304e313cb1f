"""`keyhold serve` and `keyhold health` with TLS, as an operator runs them: mutual TLS
configured from the environment, the health probe with its own client certificate, a
certificate swapped in place and picked up on SIGHUP, and plaintext refused off
loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.cli import free_port, run_cli
from tests.support.pki import make_pki, served_serial


async def _next_event(stream: asyncio.StreamReader, name: str) -> dict[str, object]:
    while True:
        line = await asyncio.wait_for(stream.readline(), timeout=20)
        assert line, f"the server exited before logging {name}"
        if not line.startswith(b"{"):  # gRPC core's own log lines
            continue
        event: dict[str, object] = json.loads(line)
        if event.get("event") == name:
            return event


@pytest.mark.slow
async def test_mutual_tls_server_health_probe_and_sighup_reload(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    # A certificate for a DNS name and localhost only: probing 127.0.0.1 needs the name.
    first = pki.ca.server("keyhold.internal", ips=())
    first.write(tmp_path, "server")
    port = free_port()
    env = {
        **os.environ,
        "KEYHOLD_DATA_DIR": str(tmp_path / "data"),
        "KEYHOLD_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "KEYHOLD_HTTP_ADDRESS": "",
        "KEYHOLD_LOG_FORMAT": "json",
        "KEYHOLD_TLS_CERT_FILE": str(pki.server_cert),
        "KEYHOLD_TLS_KEY_FILE": str(pki.server_key),
        "KEYHOLD_TLS_CLIENT_CA_FILE": str(pki.ca_file),
        "KEYHOLD_TLS_HEALTH_CA_FILE": str(pki.ca_file),
        "KEYHOLD_TLS_HEALTH_SERVER_NAME": "keyhold.internal",
        "KEYHOLD_TLS_HEALTH_CLIENT_CERT_FILE": str(pki.client_cert),
        "KEYHOLD_TLS_HEALTH_CLIENT_KEY_FILE": str(pki.client_key),
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keyhold.cli",
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stderr is not None
    try:
        serving = await _next_event(server.stderr, "serving")
        assert serving["tls"] is True
        assert serving["client_certificates"] is True
        assert serving["certificate_serial"] == hex(first.serial)

        code, out = await run_cli("health", env=env)
        assert code == 0, out
        assert "SERVING" in out
        without_client_certificate = {
            k: v for k, v in env.items() if not k.startswith("KEYHOLD_TLS_HEALTH_CLIENT_")
        }
        code, out = await run_cli("health", "--timeout", "2", env=without_client_certificate)
        assert code == 1, out
        code, out = await run_cli(
            "health", "--timeout", "2", env={**env, "KEYHOLD_TLS_HEALTH_SERVER_NAME": ""}
        )
        assert code == 1, out  # 127.0.0.1 is not a name in the certificate

        # Same sizes, same inodes, old modification times: only SIGHUP can tell.
        renewed = pki.ca.server("keyhold.internal", ips=())
        while len(renewed.cert_pem) != len(first.cert_pem):
            renewed = pki.ca.server("keyhold.internal", ips=())
        stats = [os.stat(path) for path in (pki.server_cert, pki.server_key)]
        pki.server_cert.write_bytes(renewed.cert_pem)
        pki.server_key.write_bytes(renewed.key_pem)
        for path, stat in zip((pki.server_cert, pki.server_key), stats, strict=True):
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert await asyncio.to_thread(served_serial, port, pki) == first.serial

        server.send_signal(signal.SIGHUP)
        loaded = await _next_event(server.stderr, "tls_certificate_loaded")
        assert loaded["serial"] == hex(renewed.serial)
        assert await asyncio.to_thread(served_serial, port, pki) == renewed.serial
        code, out = await run_cli("health", env=env)
        assert code == 0, out
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.communicate(), timeout=20)
    assert server.returncode == 0


@pytest.mark.slow
async def test_serve_refuses_plaintext_off_loopback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEYHOLD_DATA_DIR": str(tmp_path / "data"),
        "KEYHOLD_LISTEN_ADDRESS": "0.0.0.0:0",
        "KEYHOLD_HTTP_ADDRESS": "",
    }
    env.pop("KEYHOLD_ALLOW_PLAINTEXT", None)
    code, out = await run_cli("serve", env=env)
    assert code == 2, out
    assert "refusing to serve plaintext on 0.0.0.0:0" in out
    assert "KEYHOLD_ALLOW_PLAINTEXT=true" in out
    assert not (tmp_path / "data" / "keyhold.db").exists()  # refused before any migration
