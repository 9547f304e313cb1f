"""Two `keyhold serve` replicas on one PostgreSQL database and one Redis: rate limits are
counted once for both, a revocation through one is refused by the other at once, and a
key rotated on one signs tokens the other accepts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.databases import postgres_database
from tests.support.servers import PASSWORD, bearer
from tests.support.status import RichError, rich_error

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS_SERVER = os.environ.get("KEYHOLD_TEST_REDIS_SERVER", "redis://127.0.0.1:6379")
START_TIMEOUT = 60.0
STOP_GRACE = 10.0


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc (its sockets' inodes)."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""  # 127.0.0.1:port, once it listens
    channel: grpc.aio.Channel | None = None

    @property
    def identity(self) -> pb_grpc.IdentityServiceStub:
        assert self.channel is not None
        return pb_grpc.IdentityServiceStub(self.channel)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_serving(self) -> None:
        """Find the port the replica bound (it asked for any free one), then wait for
        grpc.health.v1 to answer SERVING there."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.address:
            self._check_alive_until(deadline, "never listened")
            ports = _listening_ports(self.process.pid)
            if ports:
                assert len(ports) == 1, ports
                self.address = f"127.0.0.1:{ports.pop()}"
            else:
                await asyncio.sleep(0.1)
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive_until(deadline, "never SERVING")
                try:
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

    def _check_alive_until(self, deadline: float, failure: str) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"replica {self.name} exited with {self.process.returncode}:\n" + self.log_tail()
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"replica {self.name} {failure}:\n{self.log_tail()}")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_GRACE seconds."""
        if self.channel is not None:
            await self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5.0)


@dataclass
class Cluster:
    a: Replica
    b: Replica
    env: dict[str, str]  # the settings both replicas share
    redis_url: str


def _shared_environment(database_url: str, redis_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEYHOLD_")}
    env.update(
        {
            "KEYHOLD_DATABASE_URL": database_url,
            "KEYHOLD_REDIS_URL": redis_url,
            "KEYHOLD_KEY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "KEYHOLD_MIGRATE_ON_START": "true",
            "KEYHOLD_ARGON2_MEMORY_KIB": "7168",
            "KEYHOLD_ARGON2_TIME_COST": "1",
            "KEYHOLD_LOG_LEVEL": "warning",
            "KEYHOLD_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    return env


def _launch(name: str, data_dir: Path, shared: dict[str, str]) -> Replica:
    data_dir.mkdir(parents=True)
    # Port 0: the kernel picks a free port for this replica alone. A port probed free
    # beforehand could be taken in the seconds before the replica binds it, and gRPC's
    # SO_REUSEPORT would then let two servers share it silently.
    env = {
        **shared,
        "KEYHOLD_LISTEN_ADDRESS": "127.0.0.1:0",
        "KEYHOLD_HTTP_ADDRESS": "",
        "KEYHOLD_DATA_DIR": str(data_dir),
    }
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyhold.cli", "serve"],
            env=env,
            cwd=data_dir,  # no `.env` file from the checkout is read
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Replica(name, process, log_path)


async def _redis_database() -> str:
    """A Redis database URL in 8..15; fails under CI and skips elsewhere when unreachable."""
    url = f"{REDIS_SERVER}/{secrets.randbelow(8) + 8}"
    client = redis.Redis.from_url(url)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI and is unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    finally:
        await client.aclose()
    return url


async def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    redis_url = await _redis_database()
    await _flush(redis_url)
    try:
        async with postgres_database() as database_url:
            shared = _shared_environment(database_url, redis_url)
            started: list[Replica] = []
            try:
                for name in ("a", "b"):
                    started.append(_launch(name, tmp_path / name, shared))
                await asyncio.gather(*(replica.wait_serving() for replica in started))
                for replica in started:
                    replica.channel = grpc.aio.insecure_channel(replica.address)
                yield Cluster(started[0], started[1], shared, redis_url)
            finally:
                await asyncio.gather(*(replica.stop() for replica in started))
                for replica in started:  # shown when a test fails
                    print(f"--- replica {replica.name} log ---\n{replica.log_tail()}")
    finally:
        await _flush(redis_url)


async def refused(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


async def login(replica: Replica, email: str) -> pb.CreateSessionResponse:
    return await replica.identity.CreateSession(
        pb.CreateSessionRequest(email=email, password=PASSWORD, user_agent="replicas")
    )


def key_id(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_a_rate_limit_counts_calls_to_every_replica_once(cluster: Cluster) -> None:
    # ResetPassword allows 10 calls a minute per peer; both replicas see 127.0.0.1.
    outcomes: list[tuple[str, grpc.StatusCode, str | None]] = []
    for _ in range(8):
        for replica in (cluster.a, cluster.b):
            error = await refused(
                replica.identity.ResetPassword(
                    pb.ResetPasswordRequest(
                        reset_token="khp_" + secrets.token_urlsafe(32), new_password=PASSWORD
                    )
                )
            )
            outcomes.append((replica.name, error.code, error.reason))
    codes = [code for _, code, _ in outcomes]
    assert codes.count(grpc.StatusCode.INVALID_ARGUMENT) == 10
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6
    # In order: the first ten anywhere are answered, the rest refused by both replicas.
    assert [(code, reason) for _, code, reason in outcomes[:10]] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "RESET_TOKEN_INVALID")
    ] * 10
    assert [(name, code, reason) for name, code, reason in outcomes[10:]] == [
        (name, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") for name in "ababab"
    ]
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        assert await client.keys("keyhold*")  # the counters live in the shared Redis
    finally:
        await client.aclose()


async def test_a_session_ended_on_one_replica_is_refused_by_the_other_at_once(
    cluster: Cluster,
) -> None:
    await cluster.a.identity.CreateUser(
        pb.CreateUserRequest(email="ada@example.com", password=PASSWORD, display_name="Ada")
    )
    session = await login(cluster.a, "ada@example.com")
    token = session.access_token
    # B verifies the token and caches the session as live (for 5 s).
    who = await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    assert who.session == session.session.name
    await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))

    await cluster.a.identity.DeleteSession(
        pb.DeleteSessionRequest(name="sessions/current"), metadata=bearer(token)
    )
    ended = time.monotonic()
    refusal: RichError | None = None
    while refusal is None and time.monotonic() - ended < 1.0:
        try:
            await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
        except grpc.aio.AioRpcError as error:
            refusal = rich_error(error)
        else:
            await asyncio.sleep(0.02)
    elapsed = time.monotonic() - ended
    assert refusal is not None, "replica B still accepted the ended session after 1 s"
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    assert elapsed < 1.0
    # And it stays refused on both, past the cache lifetime of the local verdict.
    for replica in (cluster.a, cluster.b):
        error = await refused(replica.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token)))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    error = await refused(
        cluster.b.identity.RefreshSession(
            pb.RefreshSessionRequest(refresh_token=session.refresh_token)
        )
    )
    assert error.code is grpc.StatusCode.UNAUTHENTICATED


def _create_admin(env: dict[str, str], data_dir: Path, email: str) -> None:
    """`keyhold users create-admin` with the replicas' settings."""
    data_dir.mkdir(parents=True)
    command = ["users", "create-admin", "--email", email, "--password-stdin"]
    completed = subprocess.run(
        [sys.executable, "-m", "keyhold.cli", *command],
        input=(PASSWORD + "\n").encode(),
        env={**env, "KEYHOLD_DATA_DIR": str(data_dir)},
        cwd=data_dir,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (completed.stdout + completed.stderr).decode(errors="replace")
    assert completed.returncode == 0, output
    assert "created admin users/" in output, output


async def test_a_key_rotated_on_one_replica_verifies_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    await asyncio.to_thread(_create_admin, cluster.env, tmp_path / "cli", "admin@example.com")
    first = await login(cluster.a, "admin@example.com")
    old_kid = key_id(first.access_token)
    await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(first.access_token))

    rotated = await cluster.a.identity.RotateSigningKey(
        pb.RotateSigningKeyRequest(), metadata=bearer(first.access_token)
    )
    assert rotated.key_id != old_kid
    jwks = await cluster.b.identity.GetJwks(pb.GetJwksRequest())
    published = {key.key_id for key in jwks.keys}
    assert {rotated.key_id, old_kid} <= published
    assert rotated.key_id in jwks.jwks_json

    second = await login(cluster.a, "admin@example.com")
    assert key_id(second.access_token) == rotated.key_id
    who = await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(second.access_token))
    assert who.session == second.session.name
    assert list(who.roles) == ["admin", "user"]
    # Tokens signed by the retired key keep working on both.
    for replica in (cluster.a, cluster.b):
        await replica.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(first.access_token))

    # Rotated again, and this time B has not been asked for its JWKS: it meets the new
    # key id first in a token, and must look the key up itself.
    again = await cluster.a.identity.RotateSigningKey(
        pb.RotateSigningKeyRequest(), metadata=bearer(second.access_token)
    )
    third = await login(cluster.a, "admin@example.com")
    assert key_id(third.access_token) == again.key_id
    who = await cluster.b.identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(third.access_token))
    assert who.session == third.session.name


async def test_after_a_rotation_on_one_replica_the_other_signs_with_the_new_key(
    cluster: Cluster, tmp_path: Path
) -> None:
    await asyncio.to_thread(_create_admin, cluster.env, tmp_path / "cli", "admin@example.com")
    admin = await login(cluster.a, "admin@example.com")
    before = await login(cluster.b, "admin@example.com")
    assert key_id(before.access_token) == key_id(admin.access_token)
    rotated = await cluster.a.identity.RotateSigningKey(
        pb.RotateSigningKeyRequest(), metadata=bearer(admin.access_token)
    )
    # "RotateSigningKey: ... which signs every access token from now on": the rotation is
    # announced to B, which reloads its ring (allow it up to a second).
    deadline = time.monotonic() + 1.0
    while True:
        after = await login(cluster.b, "admin@example.com")
        if key_id(after.access_token) == rotated.key_id or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert key_id(after.access_token) == rotated.key_id
