"""Passwords: change (other sessions end) and reset by a single-use token (all end)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyhold.application.identity.passwords import Passwords
from keyhold.application.identity.revocations import SESSION
from keyhold.application.identity.sessions import SessionTokens
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated
from keyhold.domain.identity.lockout import LoginLocked
from keyhold.domain.identity.passwords import PasswordPolicy
from keyhold.domain.identity.users import User
from tests.unit.application.harness import (
    LOCKOUT,
    PASSWORD,
    Ports,
    act_as,
    add_user,
    attempts,
    outcome_details,
    sessions_on,
    user_principal,
)

NEW_PASSWORD = "a brand new passphrase"
RESET_LIFETIME = timedelta(hours=1)


@pytest.fixture
def passwords(ports: Ports) -> Passwords:
    return Passwords(
        ports.unit_of_work,
        ports.hasher,
        PasswordPolicy(frozenset({"password1234"})),
        ports.recorder,
        ports.revocations,
        ports.clock,
        RESET_LIFETIME,
        ports.lockout,
    )


async def _logged_in_twice(ports: Ports) -> tuple[User, SessionTokens, SessionTokens]:
    ada = await add_user(ports)
    act_as()
    sessions = sessions_on(ports)
    here = await sessions.login("ada@example.com", PASSWORD, "")
    elsewhere = await sessions.login("ada@example.com", PASSWORD, "")
    return ada, here, elsewhere


async def _hash_verifies(ports: Ports, password: str) -> bool:
    return await ports.hasher.verify(ports.store.tables.users["ada"].password_hash, password)


async def test_change_keeps_this_session_and_ends_the_others(
    ports: Ports, passwords: Passwords
) -> None:
    ada, here, elsewhere = await _logged_in_twice(ports)
    act_as(user_principal(ada, here.session.id))

    await passwords.change(PASSWORD, NEW_PASSWORD)

    assert await _hash_verifies(ports, NEW_PASSWORD)
    assert ports.store.tables.users["ada"].updated_at == ports.clock.now()
    sessions = ports.store.tables.sessions
    assert sessions[here.session.id].revoked_at is None
    assert sessions[elsewhere.session.id].revoke_reason == "password_changed"
    assert ports.replicas.published == [(SESSION, [elsewhere.session.id])]
    await ports.tokens.verify(here.access_token.token)
    with pytest.raises(Unauthenticated) as revoked:
        await ports.tokens.verify(elsewhere.access_token.token)
    assert revoked.value.reason == "SESSION_REVOKED"
    assert attempts(ports, Action.PASSWORD_CHANGE) == [
        ("attempted", "users/ada", ""),
        ("succeeded", "users/ada", ""),
    ]


async def test_a_wrong_current_password_changes_nothing_and_counts_as_a_guess(
    ports: Ports, passwords: Passwords
) -> None:
    ada, here, elsewhere = await _logged_in_twice(ports)
    act_as(user_principal(ada, here.session.id))

    for _ in range(LOCKOUT.threshold):
        with pytest.raises(PermissionDenied) as raised:
            await passwords.change("not my password", NEW_PASSWORD)
        assert raised.value.reason == "CURRENT_PASSWORD_WRONG"
    with pytest.raises(LoginLocked):
        await passwords.change(PASSWORD, NEW_PASSWORD)

    assert await _hash_verifies(ports, PASSWORD)
    assert ports.store.tables.sessions[elsewhere.session.id].revoked_at is None
    assert ports.replicas.published == []
    assert attempts(ports, Action.PASSWORD_CHANGE)[:2] == [
        ("attempted", "users/ada", ""),
        ("denied", "users/ada", "CURRENT_PASSWORD_WRONG"),
    ]
    assert attempts(ports, Action.PASSWORD_CHANGE)[-1] == ("denied", "users/ada", "ACCOUNT_LOCKED")


async def test_a_new_password_against_the_policy_is_refused(
    ports: Ports, passwords: Passwords
) -> None:
    ada, here, _ = await _logged_in_twice(ports)
    act_as(user_principal(ada, here.session.id))

    with pytest.raises(InvalidArgument) as raised:
        await passwords.change(PASSWORD, "password1234")

    assert raised.value.reason == "PASSWORD_TOO_COMMON"
    assert await _hash_verifies(ports, PASSWORD)
    assert attempts(ports, Action.PASSWORD_CHANGE)[-1] == (
        "failed",
        "users/ada",
        "PASSWORD_TOO_COMMON",
    )


async def test_a_reset_token_sets_the_password_once_and_ends_every_session(
    ports: Ports, passwords: Passwords
) -> None:
    _, here, elsewhere = await _logged_in_twice(ports)
    act_as()
    token, expires_at = await passwords.create_reset("ADA@example.com")
    assert token.startswith("khp_")
    assert expires_at == int((ports.clock.now() + RESET_LIFETIME).timestamp())

    await passwords.reset(token, NEW_PASSWORD)

    assert await _hash_verifies(ports, NEW_PASSWORD)
    sessions = ports.store.tables.sessions
    assert {sessions[s.session.id].revoke_reason for s in (here, elsewhere)} == {"password_reset"}
    ((kind, ended),) = ports.replicas.published
    assert (kind, sorted(ended)) == (SESSION, sorted([here.session.id, elsewhere.session.id]))
    with pytest.raises(InvalidArgument) as used:
        await passwords.reset(token, "yet another passphrase")
    assert used.value.reason == "RESET_TOKEN_INVALID"
    assert await _hash_verifies(ports, NEW_PASSWORD)
    assert attempts(ports, Action.PASSWORD_RESET_CREATE) == [
        ("attempted", "", ""),
        ("succeeded", "users/ada", ""),
    ]
    assert attempts(ports, Action.PASSWORD_RESET) == [
        ("attempted", "", ""),
        ("succeeded", "users/ada", ""),
        ("attempted", "", ""),
        ("failed", "", "RESET_TOKEN_INVALID"),
    ]


async def test_a_reset_for_an_unknown_email_tells_nothing(
    ports: Ports, passwords: Passwords
) -> None:
    act_as()

    assert await passwords.create_reset("nobody@example.com") == ("", 0)

    assert ports.store.tables.one_time_tokens == {}
    assert attempts(ports, Action.PASSWORD_RESET_CREATE)[-1] == ("succeeded", "", "")
    assert outcome_details(ports, Action.PASSWORD_RESET_CREATE) == {"user_found": "false"}


async def test_a_reset_token_expires(ports: Ports, passwords: Passwords) -> None:
    await add_user(ports)
    act_as()
    token, _ = await passwords.create_reset("ada@example.com")
    ports.clock.advance(RESET_LIFETIME.total_seconds())

    with pytest.raises(InvalidArgument) as raised:
        await passwords.reset(token, NEW_PASSWORD)

    assert raised.value.reason == "RESET_TOKEN_INVALID"
    assert await _hash_verifies(ports, PASSWORD)


async def test_a_refused_new_password_leaves_the_reset_token_usable(
    ports: Ports, passwords: Passwords
) -> None:
    await add_user(ports)
    act_as()
    token, _ = await passwords.create_reset("ada@example.com")

    with pytest.raises(InvalidArgument) as raised:
        await passwords.reset(token, "short")
    assert raised.value.reason == "PASSWORD_TOO_SHORT"
    await passwords.reset(token, NEW_PASSWORD)

    assert await _hash_verifies(ports, NEW_PASSWORD)
    assert [outcome for outcome, _, _ in attempts(ports, Action.PASSWORD_RESET)] == [
        "attempted",
        "failed",
        "attempted",
        "succeeded",
    ]
