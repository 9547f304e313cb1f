"""Sessions: login with lockout, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyhold.application.identity.revocations import SESSION
from keyhold.application.identity.secrets import secret_hash
from keyhold.application.identity.sessions import Sessions
from keyhold.domain.audit.actions import Action
from keyhold.domain.errors import NotFound, Unauthenticated, Unavailable
from keyhold.domain.identity.lockout import LoginLocked
from keyhold.domain.identity.sessions import RetryGrace
from keyhold.domain.identity.users import UserState
from keyhold.domain.principal import PrincipalType
from tests.support.fakes.hasher import FakePasswordHasher
from tests.unit.application.harness import (
    ADMIN,
    LIFETIMES,
    LOCKOUT,
    PASSWORD,
    PEER,
    Ports,
    act_as,
    add_user,
    attempts,
    outcome_details,
    sessions_on,
    user_principal,
)


@pytest.fixture
def sessions(ports: Ports) -> Sessions:
    act_as()
    return sessions_on(ports)


async def test_login_starts_a_session_and_records_it(ports: Ports, sessions: Sessions) -> None:
    ada = await add_user(ports)

    started = await sessions.login(" Ada@Example.com ", PASSWORD, "app/2.0")

    session = started.session
    stored = ports.store.tables.sessions[session.id]
    assert stored == session
    assert (session.user_id, session.user_agent, session.peer) == (ada.id, "app/2.0", PEER)
    assert session.expires_at == ports.clock.now() + LIFETIMES.absolute
    assert session.idle_expires_at == ports.clock.now() + LIFETIMES.idle
    refresh_row = ports.store.tables.refresh_tokens[secret_hash(started.refresh_token)]
    assert refresh_row.session_id == session.id
    assert refresh_row.spent_at is None
    principal = await ports.tokens.verify(started.access_token.token)
    assert (principal.type, principal.subject) == (PrincipalType.USER, "users/ada")
    assert (principal.session_id, principal.roles) == (session.id, frozenset({"user"}))
    assert attempts(ports, Action.SESSION_CREATE) == [
        ("attempted", "", ""),
        ("succeeded", session.name, ""),
    ]
    details = outcome_details(ports, Action.SESSION_CREATE)
    assert details["user"] == "users/ada"
    assert "ada@example.com" not in str(details)


async def test_a_wrong_password_is_counted_and_denied(ports: Ports, sessions: Sessions) -> None:
    await add_user(ports)

    with pytest.raises(Unauthenticated) as raised:
        await sessions.login("ada@example.com", "not the password", "")

    assert raised.value.reason == "INVALID_CREDENTIALS"
    assert ports.store.tables.sessions == {}
    pair = LOCKOUT.counters("ada@example.com", "10.0.0.7")[0]
    assert [c.failures for c in await ports.failures.counts([pair.key])] == [1]
    assert attempts(ports, Action.SESSION_CREATE) == [
        ("attempted", "", ""),
        ("denied", "", "INVALID_CREDENTIALS"),
    ]
    assert outcome_details(ports, Action.SESSION_CREATE)["user"] == "users/ada"


async def test_unknown_and_disabled_accounts_answer_as_a_wrong_password(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports, "bob@example.com", state=UserState.DISABLED)

    for email in ("nobody@example.com", "bob@example.com"):
        with pytest.raises(Unauthenticated) as raised:
            await sessions.login(email, PASSWORD, "")
        assert raised.value.reason == "INVALID_CREDENTIALS"

    assert ports.hasher.dummy_verified == 1  # the unknown email spent a verification too
    assert ports.store.tables.sessions == {}
    assert [outcome for outcome, _, _ in attempts(ports, Action.SESSION_CREATE)] == [
        "attempted",
        "denied",
        "attempted",
        "denied",
    ]


async def test_the_threshold_locks_the_account_for_this_peer_until_the_cooldown(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports)
    for _ in range(LOCKOUT.threshold):
        with pytest.raises(Unauthenticated):
            await sessions.login("ada@example.com", "a wrong guess", "")
    verified = ports.hasher.verified

    with pytest.raises(LoginLocked) as raised:
        await sessions.login("ada@example.com", PASSWORD, "")

    assert raised.value.reason == "LOGIN_LOCKED"
    assert ports.hasher.verified == verified  # refused before the password is looked at
    assert attempts(ports, Action.SESSION_CREATE)[-2:] == [
        ("attempted", "", ""),
        ("denied", "", "ACCOUNT_LOCKED"),
    ]
    assert outcome_details(ports, Action.SESSION_CREATE)["lock"] == "account"

    act_as(peer="ipv4:192.0.2.1:5000")  # another peer is not locked out
    await sessions.login("ada@example.com", PASSWORD, "")
    act_as()
    ports.clock.advance(LOCKOUT.base_cooldown.total_seconds())
    await sessions.login("ada@example.com", PASSWORD, "")
    assert len(ports.store.tables.sessions) == 2


async def test_a_success_resets_the_count_for_the_account_and_peer(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports)
    for _ in range(LOCKOUT.threshold - 1):
        with pytest.raises(Unauthenticated):
            await sessions.login("ada@example.com", "a wrong guess", "")

    await sessions.login("ada@example.com", PASSWORD, "")

    pair = LOCKOUT.counters("ada@example.com", "10.0.0.7")[0]
    assert [c.failures for c in await ports.failures.counts([pair.key])] == [0]


async def test_a_login_whose_session_is_not_stored_stays_counted(
    ports: Ports, sessions: Sessions
) -> None:
    """The reservation is given back only with the session it let in."""
    await add_user(ports)
    verify = ports.hasher.verify

    async def verify_then_lose_the_store(password_hash: str, password: str) -> bool:
        ports.store.unavailable = True
        return await verify(password_hash, password)

    ports.hasher.verify = verify_then_lose_the_store  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await sessions.login("ada@example.com", PASSWORD, "")

    pair = LOCKOUT.counters("ada@example.com", "10.0.0.7")[0]
    assert [c.failures for c in await ports.failures.counts([pair.key])] == [1]
    assert not ports.store.tables.sessions


async def test_login_rehashes_an_outdated_password_hash(ports: Ports, sessions: Sessions) -> None:
    await add_user(ports, hasher=FakePasswordHasher(scheme="old"))

    await sessions.login("ada@example.com", PASSWORD, "")

    stored = ports.store.tables.users["ada"].password_hash
    assert stored.startswith("fake$")
    assert await ports.hasher.verify(stored, PASSWORD)


async def test_refresh_rotates_the_token_and_extends_the_idle_expiry(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports)
    started = await sessions.login("ada@example.com", PASSWORD, "")
    ports.clock.advance(3600)

    refreshed = await sessions.refresh(started.refresh_token)

    assert refreshed.refresh_token != started.refresh_token
    assert refreshed.session.id == started.session.id
    assert refreshed.session.idle_expires_at == ports.clock.now() + LIFETIMES.idle
    stored = ports.store.tables.sessions[started.session.id]
    assert stored.idle_expires_at == refreshed.session.idle_expires_at
    assert stored.last_refresh_at == ports.clock.now()
    tokens = ports.store.tables.refresh_tokens
    assert tokens[secret_hash(started.refresh_token)].spent_at == ports.clock.now()
    assert tokens[secret_hash(refreshed.refresh_token)].spent_at is None
    principal = await ports.tokens.verify(refreshed.access_token.token)
    assert principal.session_id == started.session.id
    assert attempts(ports, Action.SESSION_REFRESH) == [
        ("attempted", "", ""),
        ("succeeded", started.session.name, ""),
    ]
    await sessions.refresh(refreshed.refresh_token)  # the successor rotates in turn


async def test_a_spent_refresh_token_presented_again_revokes_the_session(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports)
    started = await sessions.login("ada@example.com", PASSWORD, "")
    successor = await sessions.refresh(started.refresh_token)

    with pytest.raises(Unauthenticated) as raised:
        await sessions.refresh(started.refresh_token)

    assert raised.value.reason == "REFRESH_TOKEN_REUSED"
    stored = ports.store.tables.sessions[started.session.id]
    assert (stored.revoked_at, stored.revoke_reason) == (ports.clock.now(), "refresh_token_reuse")
    assert attempts(ports, Action.SESSION_REFRESH)[-2:] == [
        ("attempted", "", ""),
        ("denied", started.session.name, "REFRESH_TOKEN_REUSED"),
    ]
    assert outcome_details(ports, Action.SESSION_REFRESH)["reuse_detected"] == "true"
    assert ports.replicas.published == [(SESSION, [started.session.id])]
    with pytest.raises(Unauthenticated) as ended:  # the thief's pair dies with the family
        await sessions.refresh(successor.refresh_token)
    assert ended.value.reason == "SESSION_EXPIRED"
    with pytest.raises(Unauthenticated) as revoked:
        await ports.tokens.verify(successor.access_token.token)
    assert revoked.value.reason == "SESSION_REVOKED"


async def test_a_retry_within_the_grace_issues_another_pair(ports: Ports) -> None:
    act_as()
    sessions = sessions_on(ports, RetryGrace(timedelta(seconds=30)))
    await add_user(ports)
    started = await sessions.login("ada@example.com", PASSWORD, "")
    lost = await sessions.refresh(started.refresh_token)  # the answer never arrived
    ports.clock.advance(5)

    retried = await sessions.refresh(started.refresh_token)

    assert outcome_details(ports, Action.SESSION_REFRESH)["retried_within_grace"] == "true"
    with pytest.raises(Unauthenticated):  # the lost successor was spent by the retry
        await sessions.refresh(lost.refresh_token)
    assert ports.store.tables.sessions[started.session.id].revoked_at is not None
    assert retried.session.id == started.session.id


async def test_an_unknown_refresh_token_is_refused(ports: Ports, sessions: Sessions) -> None:
    with pytest.raises(Unauthenticated) as raised:
        await sessions.refresh("khr_never-issued")

    assert raised.value.reason == "REFRESH_TOKEN_INVALID"
    assert attempts(ports, Action.SESSION_REFRESH) == [
        ("attempted", "", ""),
        ("denied", "", "REFRESH_TOKEN_INVALID"),
    ]


async def test_logout_revokes_the_current_session_and_its_tokens(
    ports: Ports, sessions: Sessions
) -> None:
    ada = await add_user(ports)
    started = await sessions.login("ada@example.com", PASSWORD, "")
    act_as(user_principal(ada, started.session.id))

    await sessions.delete("sessions/current")

    stored = ports.store.tables.sessions[started.session.id]
    assert (stored.revoked_at, stored.revoke_reason) == (ports.clock.now(), "logout")
    assert ports.replicas.published == [(SESSION, [started.session.id])]
    with pytest.raises(Unauthenticated) as revoked:
        await ports.tokens.verify(started.access_token.token)
    assert revoked.value.reason == "SESSION_REVOKED"
    with pytest.raises(Unauthenticated) as ended:
        await sessions.refresh(started.refresh_token)
    assert ended.value.reason == "SESSION_EXPIRED"
    assert attempts(ports, Action.SESSION_DELETE) == [
        ("attempted", started.session.name, ""),
        ("succeeded", started.session.name, ""),
    ]


async def test_another_users_session_is_not_found_unless_the_caller_is_an_admin(
    ports: Ports, sessions: Sessions
) -> None:
    await add_user(ports)
    bob = await add_user(ports, "bob@example.com")
    started = await sessions.login("ada@example.com", PASSWORD, "")
    act_as(user_principal(bob))

    with pytest.raises(NotFound):
        await sessions.delete(started.session.name)

    assert ports.store.tables.sessions[started.session.id].revoked_at is None
    assert ports.replicas.published == []
    assert attempts(ports, Action.SESSION_DELETE) == [
        ("attempted", started.session.name, ""),
        ("failed", started.session.name, "SESSION_NOT_FOUND"),
    ]
    act_as(ADMIN)
    await sessions.delete(started.session.name)
    assert ports.store.tables.sessions[started.session.id].revoked_at is not None


async def test_listing_is_newest_first_live_only_and_recorded_for_other_readers(
    ports: Ports, sessions: Sessions
) -> None:
    ada = await add_user(ports)
    first = await sessions.login("ada@example.com", PASSWORD, "")
    ports.clock.advance(60)
    second = await sessions.login("ada@example.com", PASSWORD, "")
    ports.clock.advance(60)
    third = await sessions.login("ada@example.com", PASSWORD, "")
    act_as(user_principal(ada, third.session.id))
    await sessions.delete(second.session.name)

    page, token = await sessions.page("users/me", 1, "")
    rest, last = await sessions.page("users/me", 1, token)

    assert [s.id for s in page + rest] == [third.session.id, first.session.id]
    assert last == ""
    assert attempts(ports, Action.SESSIONS_LIST) == []  # one's own sessions: not recorded
    act_as(ADMIN)
    await sessions.page("users/ada", 10, "")
    assert attempts(ports, Action.SESSIONS_LIST) == [
        ("attempted", "users/ada", ""),
        ("succeeded", "users/ada", ""),
    ]
