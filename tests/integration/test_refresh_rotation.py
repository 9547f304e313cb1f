"""Refresh-token rotation at the repository: what each outcome writes, read back through
the unit of work, on each database (SQLite's runs in one trip to its thread)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from keyhold.adapters.persistence.refresh_rotation import SqlRefreshTokenRotator
from keyhold.adapters.persistence.tables import refresh_tokens
from keyhold.domain.identity.sessions import RotationOutcome, Session
from keyhold.domain.identity.users import UserState
from keyhold.server import KeyholdServer

Server = tuple[KeyholdServer, grpc.aio.Channel]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=123456)


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
    async with app.unit_of_work() as uow:
        await uow.sessions.add(session)
        await uow.sessions.add_refresh_token(_hash(session.id), session.id, session.created_at)
    return session


async def _spent_at(app: KeyholdServer, token_hash: bytes) -> list[dt.datetime | None]:
    async with app.unit_of_work() as uow:
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
    rotator = SqlRefreshTokenRotator(app.database)
    idle_until = NOW + dt.timedelta(days=7)

    rotation = await rotator.rotate(_hash(session.id), _hash("next"), NOW, idle_until)

    assert rotation.outcome is RotationOutcome.ROTATED
    assert rotation.roles == frozenset({"user"})
    expected_idle = min(idle_until, session.expires_at)  # never past the absolute end
    assert rotation.session is not None
    assert rotation.session.idle_expires_at == expected_idle
    async with app.unit_of_work() as uow:
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
    rotator = SqlRefreshTokenRotator(app.database)
    later = NOW + dt.timedelta(days=7)
    session = await _session(app, dt.timedelta(days=1))
    await rotator.rotate(_hash(session.id), _hash("second"), NOW, later)

    reused = await rotator.rotate(_hash(session.id), _hash("third"), NOW, later)
    assert (reused.outcome, reused.session_id) == (RotationOutcome.REUSED, session.id)
    unknown = await rotator.rotate(_hash("never issued"), _hash("fourth"), NOW, later)
    assert unknown.outcome is RotationOutcome.UNKNOWN

    async with app.unit_of_work() as uow:
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
    rotator = SqlRefreshTokenRotator(app.database)
    first = await _session(app, dt.timedelta(days=1))
    second = await _session(app, dt.timedelta(days=1))
    taken = _hash(second.id)  # the successor's hash collides with a live token

    with pytest.raises(IntegrityError):
        await rotator.rotate(_hash(first.id), taken, NOW, NOW + dt.timedelta(days=7))

    assert await _spent_at(app, _hash(first.id)) == [None]  # the spend was rolled back
    async with app.unit_of_work() as uow:
        assert await uow.sessions.get(first.id) == first  # not touched
