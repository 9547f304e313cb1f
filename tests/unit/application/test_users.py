"""Users: registration by admins and by sign-up, reads and listing, and the rules on
who may change what."""

from __future__ import annotations

import pytest

from keyhold.application.identity.revocations import SESSION
from keyhold.application.identity.users import UserPatch, Users
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import AlreadyExists, NotFound, PermissionDenied, Unauthenticated
from keyhold.domain.identity.passwords import PasswordPolicy
from keyhold.domain.identity.users import UserState
from tests.support.fakes.notices import RecordedAccountNotices
from tests.unit.application.harness import (
    ADMIN,
    PASSWORD,
    Ports,
    act_as,
    add_user,
    attempts,
    outcome_details,
    sessions_on,
    user_principal,
)


def users_on(ports: Ports, notices: RecordedAccountNotices, *, self_sign_up: bool) -> Users:
    return Users(
        ports.unit_of_work,
        ports.hasher,
        PasswordPolicy(frozenset()),
        ports.recorder,
        ports.revocations,
        ports.clock,
        notices,
        self_sign_up=self_sign_up,
    )


@pytest.fixture
def notices() -> RecordedAccountNotices:
    return RecordedAccountNotices()


@pytest.fixture
def users(ports: Ports, notices: RecordedAccountNotices) -> Users:
    return users_on(ports, notices, self_sign_up=True)


async def test_an_admin_creates_a_user(ports: Ports, users: Users) -> None:
    act_as(ADMIN)

    user = await users.register(" Grace@Example.com", PASSWORD, " Grace ")

    assert user is not None
    assert (user.email, user.display_name, user.roles) == (
        "grace@example.com",
        "Grace",
        frozenset({"user"}),
    )
    assert (user.state, user.email_verified) == (UserState.ACTIVE, False)
    assert ports.store.tables.users[user.id] == user
    assert user.password_hash != PASSWORD
    assert await ports.hasher.verify(user.password_hash, PASSWORD)
    assert attempts(ports, Action.USER_CREATE) == [
        ("attempted", user.name, ""),
        ("succeeded", user.name, ""),
    ]
    assert outcome_details(ports, Action.USER_CREATE) == {"roles": "user"}


async def test_an_email_in_use_is_refused_to_an_admin(ports: Ports, users: Users) -> None:
    await add_user(ports)
    act_as(ADMIN)

    with pytest.raises(AlreadyExists) as raised:
        await users.register("ADA@example.com", "another passphrase", "Ada Two")

    assert raised.value.reason == "EMAIL_TAKEN"
    assert list(ports.store.tables.users) == ["ada"]
    assert [(o, reason) for o, _, reason in attempts(ports, Action.USER_CREATE)] == [
        ("attempted", ""),
        ("failed", "EMAIL_TAKEN"),
    ]


async def test_signing_up_with_an_email_in_use_tells_the_owner_not_the_caller(
    ports: Ports, users: Users, notices: RecordedAccountNotices
) -> None:
    ada = await add_user(ports)
    act_as()

    assert await users.register("ada@example.com", "another passphrase", "Not Ada") is None
    assert await users.register("new@example.com", "a fresh passphrase", "New") is None

    assert notices.sign_ups_with_existing_email == [ada]
    assert sorted(u.email for u in ports.store.tables.users.values()) == [
        "ada@example.com",
        "new@example.com",
    ]
    assert [(o, reason) for o, _, reason in attempts(ports, Action.USER_CREATE)] == [
        ("attempted", ""),
        ("failed", "EMAIL_TAKEN"),
        ("attempted", ""),
        ("succeeded", ""),
    ]


async def test_without_self_sign_up_only_admins_create_users(
    ports: Ports, notices: RecordedAccountNotices
) -> None:
    users = users_on(ports, notices, self_sign_up=False)
    act_as()

    with pytest.raises(PermissionDenied) as raised:
        await users.register("eve@example.com", PASSWORD, "Eve")

    assert raised.value.reason == "SIGN_UP_DISABLED"
    assert ports.store.tables.users == {}
    act_as(ADMIN)
    assert await users.register("eve@example.com", PASSWORD, "Eve") is not None


async def test_reading_oneself_is_not_recorded_and_reading_another_is(
    ports: Ports, users: Users
) -> None:
    ada = await add_user(ports)
    act_as(user_principal(ada))

    assert await users.get("users/me") == ada
    assert attempts(ports, Action.USER_GET) == []

    act_as(ADMIN)
    assert await users.get("users/ada") == ada
    with pytest.raises(NotFound):
        await users.get("users/nobody")
    assert attempts(ports, Action.USER_GET) == [
        ("attempted", "users/ada", ""),
        ("succeeded", "users/ada", ""),
        ("attempted", "users/nobody", ""),
        ("failed", "users/nobody", "USER_NOT_FOUND"),
    ]


async def test_listing_pages_through_users_in_creation_order(ports: Ports, users: Users) -> None:
    for name in ("ada", "bob", "cy"):
        await add_user(ports, f"{name}@example.com")
        ports.clock.advance(1)
    act_as(ADMIN)

    first, token = await users.page(2, "")
    rest, last = await users.page(2, token)

    assert [u.id for u in first + rest] == ["ada", "bob", "cy"]
    assert last == ""
    assert (
        attempts(ports, Action.USERS_LIST)
        == [
            ("attempted", "users", ""),
            ("succeeded", "users", ""),
        ]
        * 2
    )
    assert outcome_details(ports, Action.USERS_LIST) == {"returned": "1"}


async def test_only_admins_change_roles_and_a_change_ends_the_sessions(
    ports: Ports, users: Users
) -> None:
    ada = await add_user(ports)
    act_as()
    started = await sessions_on(ports).login("ada@example.com", PASSWORD, "")
    act_as(user_principal(ada, started.session.id))

    with pytest.raises(PermissionDenied) as raised:
        await users.update("users/me", UserPatch(roles=("admin",)), ["roles"])
    assert raised.value.reason == "FIELD_NOT_UPDATABLE"
    renamed = await users.update("users/me", UserPatch(display_name="Ada L."), ["display_name"])
    assert renamed.display_name == "Ada L."
    assert ports.store.tables.sessions[started.session.id].revoked_at is None

    act_as(ADMIN)
    promoted = await users.update("users/ada", UserPatch(roles=("user", "admin")), ["roles"])

    assert ports.store.tables.users["ada"] == promoted
    assert promoted.roles == frozenset({"user", "admin"})
    assert ports.store.tables.sessions[started.session.id].revoke_reason == "user_changed"
    assert ports.replicas.published == [(SESSION, [started.session.id])]
    assert [o for o, _, _ in attempts(ports, Action.USER_UPDATE)] == [
        "attempted",
        "succeeded",
        "attempted",
        "succeeded",
    ]
    assert outcome_details(ports, Action.USER_UPDATE) == {"fields": "roles"}


async def test_deleting_a_user_takes_its_sessions_with_it(ports: Ports, users: Users) -> None:
    await add_user(ports)
    act_as()
    started = await sessions_on(ports).login("ada@example.com", PASSWORD, "")
    act_as(ADMIN)

    await users.delete("users/ada")

    assert ports.store.tables.users == {}
    assert ports.store.tables.sessions == {}
    assert ports.store.tables.refresh_tokens == {}
    assert ports.replicas.published == [(SESSION, [started.session.id])]
    with pytest.raises(NotFound):
        await users.delete("users/ada")
    assert attempts(ports, Action.USER_DELETE) == [
        ("attempted", "users/ada", ""),
        ("succeeded", "users/ada", ""),
        ("attempted", "users/ada", ""),
        ("failed", "users/ada", "USER_NOT_FOUND"),
    ]
    with pytest.raises(Unauthenticated) as revoked:
        await ports.tokens.verify(started.access_token.token)
    assert revoked.value.reason == "SESSION_REVOKED"
