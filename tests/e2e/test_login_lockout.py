"""The lockout model from both sides: the attacker (per peer and account, per peer, and
many peers against one account) is stopped or slowed; the owner, from a peer that has
not failed, still gets in. ChangePassword's current password counts like a login."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.errors import ResourceExhausted, Unauthenticated
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.policy.v1 import policy_pb2
from keyhold.server import KeyholdServer, build_server
from keyhold.wiring.grpc_api import SERVICES
from tests.support.fakes import FakeClock
from tests.support.servers import PASSWORD, bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error

OWNER = "ipv4:198.51.100.7:50000"
WRONG = "wrong passphrase!"


def attacker(index: int) -> str:
    return f"ipv4:203.0.113.{index}:40000"


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[KeyholdServer, FakeClock]]:
    """A server on a fake clock, driven through its use cases (each call from the peer
    the test names), with one user, ada."""
    clock = FakeClock()
    settings = settings_for(
        tmp_path,
        lockout_threshold=5,
        lockout_peer_threshold=20,
        lockout_account_threshold=20,
        lockout_account_interval_seconds=30,
        password_hash_workers=4,
    )
    app = await build_server(settings, clock=clock)
    try:
        app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
        await app.identity.users.create("ada@example.com", PASSWORD, "Ada")
        yield app, clock
    finally:
        await app.platform.database.dispose()
        app.identity.hasher.close()


async def guess(app: KeyholdServer, peer: str, password: str = WRONG) -> str:
    """One login from `peer`: OK, INVALID_CREDENTIALS (verified and wrong) or
    LOGIN_LOCKED (refused before the hasher)."""
    set_current_call(CallContext(peer=peer))
    try:
        await app.identity.sessions.login("ada@example.com", password, "t")
    except (Unauthenticated, ResourceExhausted) as refused:
        return refused.reason
    return "OK"


async def test_one_attacker_is_stopped_and_the_owner_gets_in_from_a_clean_peer(
    clocked: tuple[KeyholdServer, FakeClock],
) -> None:
    app, _ = clocked
    # The owner logs in in the middle of the attacker's burst.
    *outcomes, owner = await asyncio.gather(
        *(guess(app, attacker(1)) for _ in range(50)),
        guess(app, OWNER, PASSWORD),
    )
    assert outcomes.count("INVALID_CREDENTIALS") == 5
    assert outcomes.count("LOGIN_LOCKED") == 45
    assert owner == "OK"  # the attacker's failures lock the attacker, not the account
    assert await guess(app, attacker(1), PASSWORD) == "LOGIN_LOCKED"  # even the right one
    assert await guess(app, OWNER, PASSWORD) == "OK"


async def test_many_attackers_only_slow_the_account_and_the_owner_still_gets_in(
    clocked: tuple[KeyholdServer, FakeClock],
) -> None:
    app, clock = clocked
    # Twenty peers, one guess each: under every per-peer limit, up to the ceiling.
    for index in range(20):
        assert await guess(app, attacker(index)) == "INVALID_CREDENTIALS"
    # Past it, the account is slowed: fresh peers are refused before the hasher...
    assert await guess(app, attacker(100)) == "LOGIN_LOCKED"
    # ...and so is the owner for now, told to come back within the interval.
    set_current_call(CallContext(peer=OWNER))
    with pytest.raises(ResourceExhausted) as caught:
        await app.identity.sessions.login("ada@example.com", PASSWORD, "t")
    assert 0 < caught.value.retry_after_seconds <= 30
    # One check per interval, whoever asks: an attacker takes one slot...
    clock.advance(30)
    assert await guess(app, attacker(101)) == "INVALID_CREDENTIALS"
    assert await guess(app, attacker(102)) == "LOGIN_LOCKED"
    # ...and the owner, coming back when told, the next: slowed, not stopped.
    clock.advance(30)
    assert await guess(app, OWNER, PASSWORD) == "OK"
    async with app.platform.database.engine.connect() as connection:
        denials = (
            await connection.execute(
                text(
                    "SELECT details FROM audit_events WHERE action = 'identity.session.create' "
                    "AND outcome = 'denied' AND reason = 'ACCOUNT_LOCKED'"
                )
            )
        ).all()
    assert len(denials) == 3
    assert all('"lock": "account_ceiling"' in row.details for row in denials)


async def test_a_spraying_peer_is_locked_whatever_the_accounts(
    clocked: tuple[KeyholdServer, FakeClock],
) -> None:
    app, _ = clocked
    set_current_call(CallContext(peer=attacker(7)))
    outcomes = []
    for index in range(25):
        try:
            await app.identity.sessions.login(f"user{index}@example.com", WRONG, "t")
        except (Unauthenticated, ResourceExhausted) as refused:
            outcomes.append(refused.reason)
    assert outcomes == ["INVALID_CREDENTIALS"] * 20 + ["LOGIN_LOCKED"] * 5
    assert await guess(app, OWNER, PASSWORD) == "OK"


def test_no_login_limit_is_keyed_by_a_value_anyone_can_send() -> None:
    """A limit per email let anyone lock the owner out; the account is protected by
    the lockout's per-account ceiling instead, which only slows."""
    (identity,) = [s for s in SERVICES if s.name == "IdentityService"]
    options = identity.methods_by_name["CreateSession"].GetOptions()
    limits = options.Extensions[policy_pb2.rate_limit]
    assert [limit.key for limit in limits] == [policy_pb2.RATE_LIMIT_KEY_PEER]


async def test_wrong_current_passwords_count_towards_the_lockout(tmp_path: Path) -> None:
    async with running_server(settings_for(tmp_path)) as (app, channel):
        token, _ = await signed_in(app, "ada@example.com")
        identity = pb_grpc.IdentityServiceStub(channel)

        async def change(current: str) -> tuple[grpc.StatusCode, str | None]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await identity.ChangePassword(
                    pb.ChangePasswordRequest(
                        current_password=current, new_password="a completely new passphrase"
                    ),
                    metadata=bearer(token),
                )
            error = rich_error(caught.value)
            return error.code, error.reason

        for _ in range(5):
            assert await change(WRONG) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "CURRENT_PASSWORD_WRONG",
            )
        # Five guesses used up: the right current password is refused unverified...
        assert await change(PASSWORD) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")
        # ...and so is a login from the same peer: one count for both.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.CreateSession(
                pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
            )
        assert rich_error(caught.value).reason == "LOGIN_LOCKED"
        async with app.platform.database.engine.connect() as connection:
            outcome = (
                await connection.execute(
                    text(
                        "SELECT outcome, reason FROM audit_events "
                        "WHERE action = 'identity.password.change' AND outcome != 'attempted' "
                        "ORDER BY sequence DESC LIMIT 1"
                    )
                )
            ).one()
        assert tuple(outcome) == ("denied", "ACCOUNT_LOCKED")


async def test_a_right_current_password_resets_the_count(tmp_path: Path) -> None:
    async with running_server(settings_for(tmp_path)) as (app, channel):
        token, _ = await signed_in(app, "ada@example.com")
        identity = pb_grpc.IdentityServiceStub(channel)
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError):
                await identity.CreateSession(
                    pb.CreateSessionRequest(email="ada@example.com", password=WRONG)
                )
        await identity.ChangePassword(
            pb.ChangePasswordRequest(current_password=PASSWORD, new_password=PASSWORD + "!"),
            metadata=bearer(token),
        )
        for _ in range(4):  # a fresh count: four more failures, still not locked
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await identity.CreateSession(
                    pb.CreateSessionRequest(email="ada@example.com", password=WRONG)
                )
            assert rich_error(caught.value).reason == "INVALID_CREDENTIALS"
