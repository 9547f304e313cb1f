"""Password checks reserved before they are evaluated, on SQLite and PostgreSQL: however
many arrive at once, no counter grants more than its threshold; a refused check counts
nowhere; a success gives its reservation back; and through the API, parallel guesses
never reach the hasher more often than the threshold allows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Connection, event, text

from keyhold import server as server_module
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.migrate import migrate
from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.identity.lockout import LockoutPolicy, Scope
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.engines import engine_for
from tests.support.fakes import FakeClock
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
POLICY = LockoutPolicy(threshold=5, peer_threshold=1000, account_threshold=1000)


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[SqlLoginFailureStore]:
    database = Database(engine_for(settings_for(tmp_path, database_url)))
    await migrate(database.engine)
    try:
        yield SqlLoginFailureStore(database)
    finally:
        await database.dispose()


async def test_concurrent_reservations_never_pass_the_threshold(
    store: SqlLoginFailureStore,
) -> None:
    at = datetime.now(UTC)
    counters = POLICY.counters("ada@example.com", "192.0.2.1")
    reservations = await asyncio.gather(
        *(store.reserve(counters, at, POLICY.forget_after) for _ in range(100))
    )
    granted = [r for r in reservations if r.granted]
    assert len(granted) == POLICY.threshold
    # Each grant saw its own count, 1..5, none twice; the fifth set the lock.
    assert sorted(r.counts[0].failures for r in granted) == [1, 2, 3, 4, 5]
    refused = [r for r in reservations if not r.granted]
    assert {r.refused_by.scope for r in refused if r.refused_by} == {Scope.ACCOUNT_PEER}
    assert {r.locked_until for r in refused} == {at + POLICY.base_cooldown}
    # The refused were counted nowhere: every counter holds the five grants only.
    stored = await store.counts([counter.key for counter in counters])
    assert [count.failures for count in stored] == [5, 5, 5]
    assert stored[0].locked_until == at + POLICY.base_cooldown


async def test_a_reservation_refused_by_one_counter_is_counted_on_none(
    store: SqlLoginFailureStore,
) -> None:
    """A hundred peers at once against one account with a ceiling of 5. On PostgreSQL a
    reservation can find the account locked only when it reaches its row, after it
    counted the pair and the peer: those are given back."""
    at = datetime.now(UTC)
    policy = LockoutPolicy(threshold=5, peer_threshold=5, account_threshold=5)
    peers = [f"192.0.2.{index}" for index in range(100)]
    reservations = await asyncio.gather(
        *(
            store.reserve(policy.counters("ada@example.com", peer), at, policy.forget_after)
            for peer in peers
        )
    )
    granted = {peer for peer, r in zip(peers, reservations, strict=True) if r.granted}
    assert len(granted) == 5
    (account,) = await store.counts(["account:ada@example.com"])
    assert account.failures == 5
    for peer in peers:
        pair, whole_peer = await store.counts(
            [f"account:ada@example.com|peer:{peer}", f"peer:{peer}"]
        )
        expected = 1 if peer in granted else 0
        assert (pair.failures, whole_peer.failures) == (expected, expected), peer
        assert (pair.locked_until, whole_peer.locked_until) == (None, None), peer


async def test_checks_and_releases_on_shared_counters_never_deadlock(
    store: SqlLoginFailureStore,
) -> None:
    """Logins for three accounts from three peers at once, each reserved and given back
    (as successes are), beside sweeps: every row is locked in one order."""
    policy = LockoutPolicy(threshold=1000, peer_threshold=1000, account_threshold=1000)

    async def logins(worker: int) -> None:
        for index in range(30):
            counters = policy.counters(f"user{index % 3}@example.com", f"192.0.2.{worker % 3}")
            at = datetime.now(UTC)
            reservation = await store.reserve(counters, at, policy.forget_after)
            assert reservation.granted
            await store.release(reservation, reset=Scope.ACCOUNT_PEER)
            if index % 10 == worker % 10:
                await store.forget_before(at - policy.forget_after)

    await asyncio.gather(*(logins(worker) for worker in range(12)))
    counts = await store.counts(
        [f"peer:192.0.2.{peer}" for peer in range(3)]
        + [f"account:user{user}@example.com" for user in range(3)]
    )
    assert [count.failures for count in counts] == [0] * 6  # every success given back


async def test_a_success_gives_its_reservation_back(store: SqlLoginFailureStore) -> None:
    at = datetime.now(UTC)
    counters = POLICY.counters("ada@example.com", "192.0.2.1")
    for _ in range(3):  # three failures stay counted
        assert (await store.reserve(counters, at, POLICY.forget_after)).granted
    success = await store.reserve(counters, at, POLICY.forget_after)
    await store.release(success, reset=Scope.ACCOUNT_PEER)
    pair, peer, account = await store.counts([counter.key for counter in counters])
    assert pair.failures == 0  # a success resets the pair
    assert (peer.failures, account.failures) == (3, 3)  # and is uncounted elsewhere


async def test_a_lock_set_by_a_reservation_is_lifted_by_its_success(
    store: SqlLoginFailureStore,
) -> None:
    at = datetime.now(UTC)
    policy = LockoutPolicy(threshold=5, peer_threshold=2, account_threshold=1000)
    counters = policy.counters("ada@example.com", "192.0.2.1")
    assert (await store.reserve(counters, at, policy.forget_after)).granted
    second = await store.reserve(counters, at, policy.forget_after)
    assert second.locks_set() == [Scope.PEER]  # counted as the peer's second failure
    await store.release(second, reset=Scope.ACCOUNT_PEER)
    assert (await store.reserve(counters, at, policy.forget_after)).granted


async def test_a_count_is_forgotten_after_a_quiet_hour(store: SqlLoginFailureStore) -> None:
    at = datetime.now(UTC)
    counters = POLICY.counters("ada@example.com", "192.0.2.1")
    for _ in range(5):
        await store.reserve(counters, at, POLICY.forget_after)
    assert not (await store.reserve(counters, at, POLICY.forget_after)).granted
    later = at + POLICY.forget_after + timedelta(seconds=1)
    again = await store.reserve(counters, later, POLICY.forget_after)
    assert [count.failures for count in again.counts] == [1, 1, 1]


async def test_quiet_counts_are_dropped(store: SqlLoginFailureStore) -> None:
    at = datetime.now(UTC)
    old = POLICY.counters("old@example.com", "192.0.2.1")
    recent = POLICY.counters("new@example.com", "192.0.2.2")
    await store.reserve(old, at, POLICY.forget_after)
    later = at + POLICY.forget_after + timedelta(seconds=1)
    await store.reserve(recent, later, POLICY.forget_after)
    assert await store.forget_before(later - POLICY.forget_after) == 3
    assert [c.failures for c in await store.counts([c.key for c in old])] == [0, 0, 0]
    assert [c.failures for c in await store.counts([c.key for c in recent])] == [1, 1, 1]


async def test_a_running_server_drops_quiet_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "LOGIN_FAILURES_SWEEP_SECONDS", 0.05)
    clock = FakeClock(datetime.now(UTC))
    async with running_server(settings_for(tmp_path), clock=clock) as (app, _):
        set_current_call(CallContext(peer="ipv4:192.0.2.1:1"))
        with pytest.raises(Exception, match="email or password is wrong"):
            await app.identity.sessions.login("nobody@example.com", "wrong passphrase!", "t")

        async def rows() -> int:
            async with app.platform.database.engine.connect() as connection:
                return int(await connection.scalar(text("SELECT count(*) FROM login_failures")))

        assert await rows() == 3
        clock.advance(3601)
        for _ in range(100):  # the sweep runs every 0.05 s here
            if not await rows():
                break
            await asyncio.sleep(0.05)
        assert await rows() == 0


def _lockout_statements(app: KeyholdServer) -> list[str]:
    """Statements on `login_failures` the server sends from now on."""
    seen: list[str] = []

    def record(*args: object) -> None:
        statement = str(args[2])
        if "login_failures" in statement:
            seen.append(statement.split(None, 1)[0].upper())

    event.listen(app.platform.database.engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_login_costs_one_statement_more_than_a_check(tmp_path: Path) -> None:
    """A successful login: the reservation and its release (a lone read before). A
    failed one: the reservation only (a read and two writes before)."""
    async with running_server(settings_for(tmp_path, rate_limits_enabled=False)) as (app, _):
        await signed_in(app, "ada@example.com")
        set_current_call(CallContext(peer="ipv4:192.0.2.1:1"))
        statements = _lockout_statements(app)
        await app.identity.sessions.login("ada@example.com", PASSWORD, "t")
        assert statements == ["INSERT", "UPDATE"]
        statements.clear()
        with pytest.raises(Exception, match="email or password is wrong"):
            await app.identity.sessions.login("ada@example.com", "wrong passphrase!", "t")
        assert statements == ["INSERT"]


async def test_a_login_takes_no_transaction(tmp_path: Path, database_url: str | None) -> None:
    """The reservation and the lookup commit on their own, and so does the session
    with its give-back: one statement on PostgreSQL; a savepoint on SQLite, which is a
    transaction of its own there. No BEGIN or COMMIT round trips."""
    settings = settings_for(tmp_path, database_url, rate_limits_enabled=False)
    async with running_server(settings) as (app, _):
        await signed_in(app, "ada@example.com")
        set_current_call(CallContext(peer="ipv4:192.0.2.1:1"))
        statements: list[str] = []

        def on_statement(
            connection: Connection, cursor: object, statement: str, *_: object
        ) -> None:
            if "audit_events" not in statement:
                statements.append(" ".join(statement.split()[:3]))

        def on_begin(connection: Connection) -> None:
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                statements.append("BEGIN")

        engine = app.platform.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_statement)
        if database_url:  # SQLite's BEGIN is a statement of its own
            event.listen(engine, "begin", on_begin)
        await app.identity.sessions.login("ada@example.com", PASSWORD, "t")

        session = (
            ["WITH added AS"]
            if database_url
            else [
                "SAVEPOINT sa_savepoint_1",
                "INSERT INTO sessions",
                "INSERT INTO refresh_tokens",
                "UPDATE login_failures SET",
                "RELEASE SAVEPOINT sa_savepoint_1",
            ]
        )
        assert statements == [
            "INSERT INTO login_failures",
            "SELECT users.id, users.email,",
            *session,
        ]


async def test_parallel_guesses_reach_the_hasher_at_most_threshold_times(
    tmp_path: Path, database_url: str | None
) -> None:
    threshold, attempts = 5, 100
    settings = settings_for(
        tmp_path,
        database_url,
        rate_limits_enabled=False,
        lockout_threshold=threshold,
        lockout_peer_threshold=1000,  # only the account's count for this peer is under test
        lockout_account_threshold=1000,
        password_hash_workers=4,  # verifications really overlap
    )
    async with running_server(settings) as (app, channel):
        await signed_in(app, "ada@example.com")
        identity = pb_grpc.IdentityServiceStub(channel)
        wrong = pb.CreateSessionRequest(email="ada@example.com", password="wrong passphrase!")
        results = await asyncio.gather(
            *(identity.CreateSession(wrong, timeout=60) for _ in range(attempts)),
            return_exceptions=True,
        )
        assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
        reasons = [rich_error(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
        # INVALID_CREDENTIALS is the answer of a guess that was verified; LOGIN_LOCKED
        # of one refused before the hasher.
        assert reasons.count("INVALID_CREDENTIALS") == threshold
        assert reasons.count("LOGIN_LOCKED") == attempts - threshold

        # The right password, now that the guesses are used up, is refused too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.CreateSession(
                pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
            )
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")
        assert error.retry_info is not None
        assert 45 <= error.retry_info.retry_delay.seconds <= 60

        async with app.platform.database.engine.connect() as connection:
            outcomes = (
                await connection.execute(
                    text(
                        "SELECT outcome, reason, count(*) FROM audit_events "
                        "WHERE action = 'identity.session.create' AND outcome != 'attempted' "
                        "GROUP BY outcome, reason"
                    )
                )
            ).all()
        # Verified and wrong: DENIED INVALID_CREDENTIALS; refused by the lock (and the
        # right password after them): DENIED ACCOUNT_LOCKED, never FAILED.
        assert sorted(tuple(row) for row in outcomes) == sorted(
            [
                ("denied", "ACCOUNT_LOCKED", attempts - threshold + 1),
                ("denied", "INVALID_CREDENTIALS", threshold),
                ("succeeded", "", 1),  # signed_in's own login
            ]
        )
