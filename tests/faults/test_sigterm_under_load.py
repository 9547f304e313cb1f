"""SIGTERM to `keyhold serve` in the middle of a load: the calls in flight finish within
the grace period, later ones are refused with UNAVAILABLE, the process exits 0, and no
write is cut in half: every success has its SUCCEEDED record, no failure has one, no
attempt is left without its outcome, and `keyhold audit verify` passes afterwards.

With a grace period shorter than the calls in flight, those still running when it ends
are cancelled; each still gets its audit outcome before the database is closed, and the
trail says what was really done."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.integration.test_replicas import Replica, _launch
from tests.support.audit import attempts_of
from tests.support.cli import run_cli
from tests.support.databases import postgres_database
from tests.support.load import Load
from tests.support.servers import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _environment(database_url: str, grace: float) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEYHOLD_")}
    env.update(
        {
            "KEYHOLD_DATABASE_URL": database_url,
            "KEYHOLD_KEY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "KEYHOLD_MIGRATE_ON_START": "true",
            "KEYHOLD_RATE_LIMITS_ENABLED": "false",
            # One hashing thread and a slow Argon2id: registrations queue up (≈ 50 ms
            # each), so that a dozen are in flight when the signal comes.
            "KEYHOLD_PASSWORD_HASH_WORKERS": "1",
            "KEYHOLD_ARGON2_TIME_COST": "3",
            "KEYHOLD_SHUTDOWN_GRACE_SECONDS": str(grace),
            "KEYHOLD_LOG_FORMAT": "json",
            "KEYHOLD_HTTP_ADDRESS": "",
        }
    )
    return env


async def _audit_verify(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    verify_env = {**env, "KEYHOLD_DATA_DIR": str(cwd / "verify")}
    return await run_cli("audit", "verify", env=verify_env, cwd=cwd, within_seconds=60)


async def _users_by_email(database_url: str) -> dict[str, str]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("SELECT id, email FROM users")
    finally:
        await connection.close()
    return {row["email"]: f"users/{row['id']}" for row in rows}


@pytest.mark.parametrize(("grace", "drains"), [(8.0, True), (0.1, False)], ids=["drain", "cut"])
async def test_sigterm_mid_load_loses_nothing(tmp_path: Path, grace: float, drains: bool) -> None:
    async with postgres_database() as url:
        env = _environment(url, grace)
        server: Replica = _launch("serve", tmp_path / "serve", env)
        try:
            await server.wait_serving()
            channel = grpc.aio.insecure_channel(server.address)
            identity = pb_grpc.IdentityServiceStub(channel)

            async def register(index: int) -> pb.CreateUserResponse:
                return await identity.CreateUser(
                    pb.CreateUserRequest(
                        email=f"user{index}@example.com", password=PASSWORD, display_name="U"
                    ),
                    timeout=30,
                )

            load = Load(register, workers=12)
            load.start()
            try:
                await load.wait_for_ok(20, within=60)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await asyncio.to_thread(server.process.wait, grace + 15)
                exited = time.monotonic() - signalled
                await asyncio.sleep(0.3)  # calls now meet a closed port
            finally:
                calls = await load.stop()
                await channel.close()
        except BaseException:
            print(server.log_tail())
            raise
        finally:
            await server.stop()

        assert server.process.returncode == 0, server.log_tail()
        events = [
            json.loads(line).get("event") for line in server.log_path.read_text().splitlines()
        ]
        assert "shutting_down" in events
        assert exited < grace + 3
        codes = load.codes()
        in_flight = [c for c in calls if c.started < signalled < c.started + c.seconds]
        print(
            f"grace {grace}s: {len(calls)} calls, {codes}; {len(in_flight)} in flight at "
            f"SIGTERM, of which {sum(c.code is grpc.StatusCode.OK for c in in_flight)} OK, the "
            f"last ended {max(c.started + c.seconds for c in in_flight) - signalled:.2f}s "
            f"after it; exit {exited:.2f}s after it"
        )
        assert len(in_flight) >= 6
        # Refused (the server is going or gone), or, when cut, cancelled by it.
        allowed = {("OK", None), ("UNAVAILABLE", None)}
        assert set(codes) <= (allowed if drains else allowed | {("CANCELLED", None)}), codes
        attempts = await attempts_of(url, "identity.user.create")
        assert attempts.malformed() == []
        assert attempts.unfinished() == []  # no attempt left without its outcome
        succeeded = set(attempts.resources_with("succeeded"))
        # Sign-up answers without the user (the same for a new and a taken email): an
        # OK call's user is the one stored under its email ("" if none is).
        by_email = await _users_by_email(url)
        ok = {by_email.get(f"user{c.index}@example.com", "") for c in load.ok()}
        if drains:
            # Everything in flight finished normally; only what came later was refused.
            assert all(c.code is grpc.StatusCode.OK for c in in_flight)
            assert all(c.started > signalled for c in calls if c.code is not grpc.StatusCode.OK)
            assert succeeded == ok
            assert len(attempts.outcomes) == len(ok)  # the refused never started
        else:
            # Cut at the end of the grace period: the trail says what was really done. A
            # call can finish its work just as it is cut; then SUCCEEDED is the truth.
            assert ok <= succeeded
            stored = set(by_email.values())
            assert succeeded <= stored
            assert not set(attempts.resources_with("failed")) & stored
            assert stored <= set(attempts.resources.values())
            assert len(attempts.resources_with("failed")) >= 1
        code, out = await _audit_verify(env, tmp_path)
        assert code == 0, out
        assert "audit chain OK" in out
