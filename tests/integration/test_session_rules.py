"""The session rules in SQL (`adapters/persistence/identity/sessions.py`) and their in-memory twins
in the domain answer alike, on the same rows, on each database: edges included."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, literal, select

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity.sessions import (
    idle_expiry_after_refresh,
    session_is_live,
    user_is_active,
)
from keyhold.adapters.persistence.tables import sessions, users
from keyhold.adapters.persistence.types import UtcDateTime
from keyhold.domain.identity.sessions import Session
from keyhold.domain.identity.users import User, UserState
from tests.support.audit import audit_stack
from tests.support.databases import postgres_database

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
_OFFSETS = [dt.timedelta(seconds=-1), dt.timedelta(0), dt.timedelta(microseconds=1)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        async with audit_stack(tmp_path, None) as stack:
            yield stack.database
    else:
        async with postgres_database() as url, audit_stack(tmp_path, url) as stack:
            yield stack.database


def _user(state: UserState) -> User:
    return User(
        f"u-{state.value}",
        f"{state.value}@example.com",
        "Rules",
        "x",
        False,
        state,
        frozenset({"user"}),
        NOW,
        NOW,
    )


def _sessions() -> list[Session]:
    """Every combination of revoked or not and absolute and idle expiry before, at and
    just after NOW."""
    found = []
    for number, (revoked, expires, idle) in enumerate(
        itertools.product([None, NOW - dt.timedelta(hours=1)], _OFFSETS, _OFFSETS)
    ):
        found.append(
            Session(
                id=f"s{number}",
                user_id=_user(UserState.ACTIVE).id,
                user_agent="rules",
                peer="ipv4:127.0.0.1:1",
                created_at=NOW - dt.timedelta(days=1),
                expires_at=NOW + expires,
                idle_expires_at=NOW + idle,
                last_refresh_at=NOW - dt.timedelta(days=1),
                revoked_at=revoked,
                revoke_reason="logout" if revoked else "",
            )
        )
    return found


async def _store(database: Database, stored: list[Session]) -> None:
    async with database.transaction() as connection:
        for state in UserState:
            user = _user(state)
            await connection.execute(
                insert(users).values(
                    id=user.id,
                    email=user.email,
                    display_name=user.display_name,
                    password_hash=user.password_hash,
                    email_verified=user.email_verified,
                    state=user.state.value,
                    roles=json.dumps(sorted(user.roles)),
                    created_at=user.created_at,
                    updated_at=user.updated_at,
                )
            )
        for session in stored:
            await connection.execute(
                insert(sessions).values(
                    id=session.id,
                    user_id=session.user_id,
                    user_agent=session.user_agent,
                    peer=session.peer,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                    idle_expires_at=session.idle_expires_at,
                    last_refresh_at=session.last_refresh_at,
                    revoked_at=session.revoked_at,
                    revoke_reason=session.revoke_reason,
                )
            )


async def test_a_session_is_live_alike_in_sql_and_in_memory(database: Database) -> None:
    stored = _sessions()
    await _store(database, stored)

    async with database.autocommit() as connection:
        live_in_sql = set(
            await connection.scalars(select(sessions.c.id).where(session_is_live(NOW)))
        )

    assert live_in_sql == {session.id for session in stored if session.is_live(NOW)}
    assert live_in_sql  # some are live, some are not
    assert live_in_sql != {session.id for session in stored}


async def test_a_user_is_active_alike_in_sql_and_in_memory(database: Database) -> None:
    await _store(database, [])

    async with database.autocommit() as connection:
        active_in_sql = set(await connection.scalars(select(users.c.id).where(user_is_active())))

    assert active_in_sql == {_user(state).id for state in UserState if _user(state).is_active}


async def test_a_refresh_moves_the_idle_expiry_alike_in_sql_and_in_memory(
    database: Database,
) -> None:
    stored = _sessions()
    await _store(database, stored)

    in_sql, in_memory = {}, {}
    async with database.autocommit() as connection:
        for session, offset in itertools.product(stored, _OFFSETS):
            idle_until = session.expires_at + offset  # before, at and after its end
            in_sql[session.id, offset] = await connection.scalar(
                select(idle_expiry_after_refresh(literal(idle_until, UtcDateTime()))).where(
                    sessions.c.id == session.id
                )
            )
            in_memory[session.id, offset] = session.refreshed(NOW, idle_until).idle_expires_at

    assert in_sql == in_memory
