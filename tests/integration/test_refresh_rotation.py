"""Refresh-token rotation at the repository: what each outcome writes, read back through
the unit of work, on each database."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from keyhold.adapters.persistence.identity.refresh_rotation import SqlRefreshTokenRotator
from keyhold.adapters.persistence.tables import refresh_tokens
from keyhold.domain.identity.sessions import RetryGrace, RotationOutcome, Session
from keyhold.domain.identity.users import UserState
from keyhold.server import KeyholdServer

Server = tuple[KeyholdServer, grpc.aio.Channel]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=123456)
GRACE = RetryGrace(dt.timedelta(seconds=10), retries=1)
LATER = NOW + dt.timedelta(days=7)


def _hash(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


async def _session(app: KeyholdServer, expires_in: dt.timedelta) -> Session:
    user = await app.identity.users.create(
        f"{uuid.uuid4().hex[:8]}@example.com", "a long enough passphrase", "Rotating"
    )
    session = Session(
        id=uuid.uuid4().hex,
        user_id=user.name.removeprefix("users/"),
        user_agent="test",
        peer="ipv4:127.0.0.1:1",
        created_at=NOW - dt.timedelta(hours=1),
        expires_at=NOW + expires_in,
        idle_expires_at=NOW + dt.timedelta(minutes=5),
        last_refresh_at=NOW - dt.timedelta(hours=1),
    )
    async with app.platform.unit_of_work() as uow:
        await uow.sessions.add(session, _hash(session.id))
    return session


async def _spent_at(app: KeyholdServer, token_hash: bytes) -> list[dt.datetime | None]:
    async with app.platform.unit_of_work() as uow:
        rows = await uow.connection.execute(
            select(refresh_tokens.c.spent_at).where(refresh_tokens.c.token_hash == token_hash)
        )
        return [row.spent_at for row in rows]


@pytest.mark.parametrize("expires_in", [dt.timedelta(days=1), dt.timedelta(minutes=2)])
async def test_a_rotation_spends_adds_and_touches(
    any_server: Server, expires_in: dt.timedelta
) -> None:
    app, _ = any_server
    session = await _session(app, expires_in)
    rotator = SqlRefreshTokenRotator(app.platform.database)
    idle_until = NOW + dt.timedelta(days=7)

    rotation = await rotator.rotate(_hash(session.id), _hash("next"), NOW, idle_until)

    assert rotation.outcome is RotationOutcome.ROTATED
    assert rotation.roles == frozenset({"user"})
    expected_idle = min(idle_until, session.expires_at)  # never past the absolute end
    assert rotation.session is not None
    assert rotation.session.idle_expires_at == expected_idle
    async with app.platform.unit_of_work() as uow:
        stored = await uow.sessions.get(session.id)
        successor = await uow.sessions.refresh_token_session(_hash("next"))
    assert stored == rotation.session
    assert stored is not None
    assert stored.last_refresh_at == NOW
    assert stored.idle_expires_at == expected_idle
    assert successor == session.id
    assert await _spent_at(app, _hash(session.id)) == [NOW]
    assert await _spent_at(app, _hash("next")) == [None]


async def test_spent_unknown_and_ended_tokens(any_server: Server) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database)
    later = NOW + dt.timedelta(days=7)
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, later)

    reused = await rotator.rotate(_hash(session.id), _hash("third"), NOW, later)
    assert (reused.outcome, reused.session_id) == (RotationOutcome.REUSED, session.id)
    unknown = await rotator.rotate(_hash("never issued"), _hash("fourth"), NOW, later)
    assert unknown.outcome is RotationOutcome.UNKNOWN

    async with app.platform.unit_of_work() as uow:
        user = await uow.users.get(session.user_id)
        assert user is not None
        await uow.users.update(user.with_changes(state=UserState.DISABLED))
    ended = await rotator.rotate(_hash("second"), _hash("fifth"), NOW, later)
    assert (ended.outcome, ended.session_id) == (RotationOutcome.ENDED, session.id)
    assert await _spent_at(app, _hash("second")) == [NOW]  # the spend stands
    assert await _spent_at(app, _hash("fifth")) == []  # no successor
    assert [await _spent_at(app, _hash(name)) for name in ("third", "fourth")] == [[], []]


async def test_a_failed_rotation_writes_nothing(any_server: Server) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database)
    first = await _session(app, dt.timedelta(days=1))
    second = await _session(app, dt.timedelta(days=1))
    taken = _hash(second.id)  # the successor's hash collides with a live token

    with pytest.raises(IntegrityError):
        await rotator.rotate(_hash(first.id), taken, NOW, NOW + dt.timedelta(days=7))

    assert await _spent_at(app, _hash(first.id)) == [None]  # the spend was rolled back
    async with app.platform.unit_of_work() as uow:
        assert await uow.sessions.get(first.id) == first  # not touched


async def _live_tokens(app: KeyholdServer, session_id: str) -> list[bytes]:
    async with app.platform.unit_of_work() as uow:
        rows = await uow.connection.execute(
            select(refresh_tokens.c.token_hash).where(
                refresh_tokens.c.session_id == session_id, refresh_tokens.c.spent_at.is_(None)
            )
        )
        return [row.token_hash for row in rows]


async def test_a_retry_within_the_grace_replaces_the_unused_successor(any_server: Server) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, GRACE)
    session = await _session(app, dt.timedelta(days=1))
    first = _hash(session.id)
    await rotator.rotate(first, _hash("lost"), NOW, LATER)

    retried = await rotator.rotate(first, _hash("retried"), NOW + dt.timedelta(seconds=9), LATER)

    assert (retried.outcome, retried.session_id) == (RotationOutcome.RETRIED, session.id)
    assert retried.roles == frozenset({"user"})
    assert retried.session is not None
    assert retried.session.last_refresh_at == NOW + dt.timedelta(seconds=9)
    assert await _live_tokens(app, session.id) == [_hash("retried")]  # one live token
    # The successor it replaced was never presented: presenting it now is theft.
    lost = await rotator.rotate(_hash("lost"), _hash("x"), NOW + dt.timedelta(seconds=9), LATER)
    assert lost.outcome is RotationOutcome.REUSED
    # The retried pair rotates as usual.
    onwards = await rotator.rotate(_hash("retried"), _hash("next"), NOW, LATER)
    assert onwards.outcome is RotationOutcome.ROTATED


@pytest.mark.parametrize(
    ("grace", "after"),
    [(GRACE, dt.timedelta(seconds=10)), (RetryGrace(dt.timedelta(0)), dt.timedelta(0))],
    ids=["after-the-window", "no-grace"],
)
async def test_reuse_outside_the_window_is_reuse(
    any_server: Server, grace: RetryGrace, after: dt.timedelta
) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, grace)
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, LATER)

    reused = await rotator.rotate(_hash(session.id), _hash("third"), NOW + after, LATER)

    assert (reused.outcome, reused.session_id) == (RotationOutcome.REUSED, session.id)
    assert await _live_tokens(app, session.id) == [_hash("second")]  # nothing written


async def test_a_retry_beyond_the_allowed_number_is_reuse(any_server: Server) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, GRACE)  # one retry
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, LATER)
    soon = NOW + dt.timedelta(seconds=1)
    retried = await rotator.rotate(_hash(session.id), _hash("retried"), soon, LATER)
    assert retried.outcome is RotationOutcome.RETRIED

    again = await rotator.rotate(_hash(session.id), _hash("again"), soon, LATER)

    assert (again.outcome, again.session_id) == (RotationOutcome.REUSED, session.id)
    assert await _live_tokens(app, session.id) == [_hash("retried")]


async def test_each_retry_replaces_the_last_unused_successor(any_server: Server) -> None:
    """Answers lost twice in a row: the second retry replaces the first retry's pair,
    which is from then on as dead as the first one."""
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, RetryGrace(dt.timedelta(seconds=10), 2))
    session = await _session(app, dt.timedelta(days=1))
    first = _hash(session.id)
    await rotator.rotate(first, _hash("lost"), NOW, LATER)
    await rotator.rotate(first, _hash("lost again"), NOW + dt.timedelta(seconds=1), LATER)

    retried = await rotator.rotate(first, _hash("kept"), NOW + dt.timedelta(seconds=2), LATER)

    assert retried.outcome is RotationOutcome.RETRIED
    assert await _live_tokens(app, session.id) == [_hash("kept")]
    for lost in ("lost", "lost again"):
        reused = await rotator.rotate(_hash(lost), _hash(f"after {lost}"), NOW, LATER)
        assert reused.outcome is RotationOutcome.REUSED


async def test_an_older_token_within_the_window_is_reuse(any_server: Server) -> None:
    """Once the successor has been used the spent token is no longer the latest one."""
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, GRACE)
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, LATER)
    await rotator.rotate(_hash("second"), _hash("third"), NOW, LATER)

    for token in (session.id, "second"):  # older, then the immediately previous
        reused = await rotator.rotate(_hash(token), _hash(f"after {token}"), NOW, LATER)
        if token == "second":  # its successor is unused: the one retry it has
            assert reused.outcome is RotationOutcome.RETRIED
        else:
            assert (reused.outcome, reused.session_id) == (RotationOutcome.REUSED, session.id)


async def test_a_retry_of_an_ended_session_issues_nothing(any_server: Server) -> None:
    app, _ = any_server
    rotator = SqlRefreshTokenRotator(app.platform.database, GRACE)
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, LATER)
    async with app.platform.unit_of_work() as uow:
        await uow.sessions.revoke(session.id, NOW, "logout")

    ended = await rotator.rotate(_hash(session.id), _hash("third"), NOW, LATER)

    assert (ended.outcome, ended.session_id) == (RotationOutcome.ENDED, session.id)
    assert await _spent_at(app, _hash("third")) == []
