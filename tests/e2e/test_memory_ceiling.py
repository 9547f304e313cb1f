"""Memory has a ceiling no input can move: 50,000 calls, each with a rate-limit key never
seen before and of the longest length the API accepts, leave the server's memory where
it was once its structures are full, and a legitimate client is still served.

Part of the flood goes through the real gRPC server from one peer (127.0.0.1). A single
peer is soon refused by its own limit, so the rest stands for many peers (addresses from
an IPv6 /64, which one attacker can hold) and goes straight to the server's rate-limit
gate, the first structure a call's values reach. The legitimate client comes from
another peer (::1): the flood's keys must not limit it."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from keyhold.api.policy import load_policies
from keyhold.domain.call import CallContext
from keyhold.domain.errors import ResourceExhausted
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from keyhold.wiring.grpc_api import SERVICES
from tests.support.servers import PASSWORD, running_server, settings_for

pytestmark = pytest.mark.slow

CLIENT_ID_LENGTH = 128  # the longest client_id the API accepts
EMAIL_LENGTH = 254  # the longest email the API accepts
RATE_LIMIT_ENTRIES = 20_000  # the server's ceiling here (KEYHOLD_RATE_LIMIT_MEMORY_ENTRIES)
# The memory the flood may add once the server's structures are full: what a call in
# flight and the runtime's own caches hold, with room to spare. Without the ceilings
# every new key is kept, about half a kilobyte each, and the flood adds several times
# this.
RSS_GROWTH_BOUND_BYTES = 12 * 1024 * 1024
GRPC_CALLS = 10_000
GATE_CALLS = 40_000
IN_FLIGHT = 64  # below the server's streams per connection (KEYHOLD_MAX_CONCURRENT_STREAMS)


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _client_id() -> str:
    return secrets.token_hex(CLIENT_ID_LENGTH // 2)


def _email() -> str:
    """A well-formed address of exactly EMAIL_LENGTH characters, never seen before."""
    local = secrets.token_hex(32)  # 64 characters, the most a local part may have
    labels, length = [], len(local) + 1 + len(".example")
    while length < EMAIL_LENGTH:
        size = min(63, EMAIL_LENGTH - length - (1 if labels else 0))
        if labels:
            length += 1
        labels.append(secrets.token_hex(32)[:size])
        length += size
    address = f"{local}@{'.'.join(labels)}.example"
    assert len(address) == EMAIL_LENGTH
    return address


def _peer() -> str:
    return (
        f"ipv6:[2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}]:443"
    )


async def _concurrently(calls: int, call: Callable[[int], Awaitable[None]]) -> None:
    """`call(0)` … `call(calls - 1)`, IN_FLIGHT at a time, from as many workers (not a
    task per call: the test's own memory stays flat)."""
    indexes = iter(range(calls))

    async def worker() -> None:
        for index in indexes:
            await call(index)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def _flood_over_grpc(channel: grpc.aio.Channel, calls: int) -> Counter[grpc.StatusCode]:
    identity = pb_grpc.IdentityServiceStub(channel)
    codes: Counter[grpc.StatusCode] = Counter()

    async def call(index: int) -> None:
        try:
            if index % 2:
                await identity.CreateSession(
                    pb.CreateSessionRequest(email=_email(), password="not the password")
                )
            else:
                await identity.CreateServiceToken(
                    pb.CreateServiceTokenRequest(client_id=_client_id(), client_secret="s")
                )
        except grpc.aio.AioRpcError as error:
            codes[error.code()] += 1
        else:
            codes[grpc.StatusCode.OK] += 1

    await _concurrently(calls, call)
    return codes


async def _flood_at_the_gate(app: KeyholdServer, calls: int) -> int:
    """Calls from as many peers, each with a new value: every limit lets each through,
    so each call adds a key by peer and a key by value. Returns the calls refused."""
    policies = {p.full_method.rsplit("/", 1)[1]: p for p in load_policies(SERVICES).values()}
    token, login = policies["CreateServiceToken"], policies["CreateSession"]
    refused = 0
    for index in range(calls):
        call = CallContext(peer=_peer(), method=token.full_method)
        try:
            if index % 2:
                request = pb.CreateSessionRequest(email=_email(), password="x")
                await app.api.rate_limit_gate.check(login, call, request)
            else:
                request = pb.CreateServiceTokenRequest(client_id=_client_id())
                await app.api.rate_limit_gate.check(token, call, request)
        except ResourceExhausted:
            refused += 1
    return refused


async def _legitimate_client_is_served(app: KeyholdServer, port: int) -> None:
    account, secret = await app.identity.service_accounts.create("legit", ["audit.read"])
    await app.identity.users.create("legit@example.com", PASSWORD, "Legit")
    async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
        identity = pb_grpc.IdentityServiceStub(channel)
        issued = await identity.CreateServiceToken(
            pb.CreateServiceTokenRequest(client_id=account.client_id, client_secret=secret)
        )
        assert issued.access_token
        session = await identity.CreateSession(
            pb.CreateSessionRequest(email="legit@example.com", password=PASSWORD)
        )
        assert session.access_token


async def test_a_flood_of_new_keys_leaves_memory_where_it_was(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        listen_address="localhost:0",  # 127.0.0.1 and ::1: two peers
        rate_limits_enabled=True,
        rate_limit_memory_entries=RATE_LIMIT_ENTRIES,
    )
    async with running_server(settings) as (app, channel):
        # Warm up: the server's structures and the runtime's pools fill once.
        await _flood_over_grpc(channel, 2_000)
        await _flood_at_the_gate(app, RATE_LIMIT_ENTRIES // 2)
        gc.collect()
        before = _rss_bytes()

        codes = await _flood_over_grpc(channel, GRPC_CALLS)
        refused_at_gate = await _flood_at_the_gate(app, GATE_CALLS)
        gc.collect()
        grown = _rss_bytes() - before

        # Every call reached the limiter: none was refused as malformed or failed.
        assert set(codes) <= {
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }, codes
        assert refused_at_gate == 0
        assert grown < RSS_GROWTH_BOUND_BYTES, f"RSS grew by {grown / 2**20:.1f} MiB"
        await _legitimate_client_is_served(app, app.port)
