"""The fake unit of work keeps the SQL unit of work's promises, so that what the
application tests conclude about atomicity holds on the database too: a block that
ends cleanly commits, one that raises (or is cancelled) leaves nothing behind, and
another unit of work sees nothing until the commit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime

import pytest

from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import Unavailable
from keyhold.domain.identity.sessions import Session
from keyhold.domain.identity.users import EmailTaken, User
from tests.support.fakes.hasher import FakePasswordHasher
from tests.support.fakes.lockout import InMemoryLoginFailureStore
from tests.support.fakes.store import IntegrityViolation
from tests.unit.application.harness import (
    PASSWORD,
    Ports,
    act_as,
    add_user,
    attempts,
    sessions_on,
)


class Boom(Exception):
    pass


def _session(user: User, session_id: str, now: datetime) -> Session:
    return Session(session_id, user.id, "ua", "peer", now, now, now, now)


async def test_a_clean_block_commits_every_write(ports: Ports) -> None:
    ada = await add_user(ports)
    now = ports.clock.now()

    async with ports.unit_of_work() as uow:
        await uow.users.update(ada.with_changes(display_name="Ada L."))
        await uow.sessions.add(_session(ada, "s1", now), b"h1")

    tables = ports.store.tables
    assert tables.users["ada"].display_name == "Ada L."
    assert tables.sessions["s1"].user_id == "ada"
    assert tables.refresh_tokens[b"h1"].session_id == "s1"
    assert (ports.store.commits, ports.store.rollbacks) == (2, 0)


async def test_a_block_that_raises_leaves_nothing_behind(ports: Ports) -> None:
    ada = await add_user(ports)
    now = ports.clock.now()

    async def write_then_fail() -> None:
        async with ports.unit_of_work() as uow:
            await uow.users.update(ada.with_changes(display_name="Ada L."))
            await uow.users.add(replace(ada, id="bob", email="bob@example.com"))
            await uow.sessions.add(_session(ada, "s1", now), b"h1")
            assert (await uow.users.get("ada")) == ada.with_changes(display_name="Ada L.")
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()

    tables = ports.store.tables
    assert tables.users == {"ada": ada}
    assert (tables.sessions, tables.refresh_tokens) == ({}, {})
    assert ports.store.rollbacks == 1


async def test_a_cancelled_block_leaves_nothing_behind(ports: Ports) -> None:
    ada = await add_user(ports)
    wrote = asyncio.Event()

    async def delete_then_wait() -> None:
        async with ports.unit_of_work() as uow:
            await uow.users.delete(ada.id)
            wrote.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(delete_then_wait())
    await wrote.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert ports.store.tables.users == {"ada": ada}


async def test_writes_are_seen_by_others_only_once_committed(ports: Ports) -> None:
    ada = await add_user(ports)

    bob = await add_user(ports, "bob@example.com")
    renamed = bob.with_changes(display_name="Robert")

    async with ports.unit_of_work() as writer:
        await writer.users.delete(ada.id)
        await writer.users.update(renamed)
        assert (await writer.users.get(ada.id), await writer.users.get(bob.id)) == (None, renamed)
        async with ports.unit_of_work() as reader:
            assert (await reader.users.get(ada.id), await reader.users.get(bob.id)) == (ada, bob)

    async with ports.unit_of_work() as reader:
        assert (await reader.users.get(ada.id), await reader.users.get(bob.id)) == (None, renamed)


async def test_concurrent_units_keep_each_others_writes_to_other_rows(ports: Ports) -> None:
    ada = await add_user(ports)
    bob = await add_user(ports, "bob@example.com")

    first, second = ports.unit_of_work(), ports.unit_of_work()
    async with first:
        async with second:
            await second.users.update(bob.with_changes(display_name="Robert"))
        await first.users.update(ada.with_changes(display_name="Ada L."))

    names = {u.id: u.display_name for u in ports.store.tables.users.values()}
    assert names == {"ada": "Ada L.", "bob": "Robert"}


async def test_the_schema_rules_hold(ports: Ports) -> None:
    ada = await add_user(ports)
    now = ports.clock.now()

    with pytest.raises(EmailTaken):  # as the SQL repository reports a unique violation
        await add_user(ports, "ada@example.com")
    with pytest.raises(IntegrityViolation):  # a session of nobody
        async with ports.unit_of_work() as uow:
            await uow.sessions.add(_session(replace(ada, id="ghost"), "s1", now), b"h0")
    async with ports.unit_of_work() as uow:  # deleting a user cascades
        await uow.sessions.add(_session(ada, "s1", now), b"h1")
    async with ports.unit_of_work() as uow:
        assert await uow.users.delete(ada.id)
    assert (ports.store.tables.sessions, ports.store.tables.refresh_tokens) == ({}, {})


async def test_an_unreachable_store_refuses_to_begin(ports: Ports) -> None:
    ports.store.unavailable = True

    with pytest.raises(Unavailable) as raised:
        async with ports.unit_of_work():
            pass

    assert raised.value.reason == "DATABASE_UNAVAILABLE"


async def test_a_login_whose_last_write_fails_keeps_neither_session_nor_rehash(
    ports: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    outdated = await add_user(ports, hasher=FakePasswordHasher(scheme="old"))

    async def unavailable(*_: object, **__: object) -> None:
        raise Unavailable("DATABASE_UNAVAILABLE", "lost the connection")

    # The lockout's give-back is the last write of the transaction that stores the session.
    monkeypatch.setattr(InMemoryLoginFailureStore, "release", unavailable)
    act_as()

    with pytest.raises(Unavailable):
        await sessions_on(ports).login("ada@example.com", PASSWORD, "")

    assert ports.store.tables.sessions == {}
    assert ports.store.tables.users["ada"].password_hash == outdated.password_hash
    assert attempts(ports, Action.SESSION_CREATE)[-1] == ("failed", "", "DATABASE_UNAVAILABLE")
