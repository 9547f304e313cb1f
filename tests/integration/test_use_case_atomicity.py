"""Each write use case is all or nothing on each database: a failure injected once its
unit of work has written (after the last repository write, so every statement before
it must be undone too) leaves the database as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.identity.one_time_tokens import SqlOneTimeTokenRepository
from keyhold.adapters.persistence.identity.refresh_rotation import SqlRefreshTokenRotator
from keyhold.adapters.persistence.identity.service_accounts import SqlServiceAccountRepository
from keyhold.adapters.persistence.identity.sessions import SqlSessionRepository
from keyhold.adapters.persistence.identity.users import SqlUserRepository
from keyhold.adapters.persistence.provider.connections import SqlConnectionRepository
from keyhold.adapters.persistence.provider.providers import SqlProviderRepository
from keyhold.adapters.persistence.tables import (
    connections,
    providers,
    refresh_tokens,
    service_accounts,
    sessions,
    users,
)
from keyhold.application.identity import sessions as sessions_module
from keyhold.application.identity.users import UserPatch
from keyhold.application.provider.catalog import ProviderFields
from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.identity.lockout import LockoutPolicy
from keyhold.domain.identity.sessions import RetryGrace, RotationOutcome
from keyhold.domain.identity.users import User, UserState
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.provider.providers import AuthType
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD

Server = tuple[KeyholdServer, grpc.aio.Channel]
NEW_PASSWORD = "a completely new passphrase"


class Injected(Exception):
    """The failure a test injects."""


def fail_after(monkeypatch: pytest.MonkeyPatch, repository: type, method: str) -> None:
    """`repository.method` does its work, then fails."""
    original: Callable[..., Awaitable[Any]] = getattr(repository, method)

    async def then_fail(self: object, *args: Any, **kwargs: Any) -> Any:
        await original(self, *args, **kwargs)
        raise Injected(method)

    monkeypatch.setattr(repository, method, then_fail)


async def _rows(app: KeyholdServer, table: Any, *where: Any) -> list[Any]:
    async with app.platform.unit_of_work() as uow:
        return list(await uow.connection.execute(select(table).where(*where)))


async def _count(app: KeyholdServer, table: Any) -> int:
    async with app.platform.unit_of_work() as uow:
        counted = await uow.connection.execute(select(func.count()).select_from(table))
        return int(counted.scalar_one())


async def _user(app: KeyholdServer, email: str) -> User:
    await app.identity.users.create(email, PASSWORD, "Atomic")
    async with app.platform.unit_of_work() as uow:
        user = await uow.users.by_email(email)
    assert user is not None
    return user


def _acting_as(user: User, session_id: str | None = None, *, admin: bool = False) -> None:
    roles = frozenset({"user", "admin"} if admin else {"user"})
    principal = Principal(PrincipalType.USER, user.name, roles, session_id=session_id)
    set_current_call(CallContext(principal=principal, peer="ipv4:192.0.2.7:1"))


async def test_user_creation(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    fail_after(monkeypatch, SqlUserRepository, "add")  # a SAVEPOINT and an INSERT

    with pytest.raises(Injected):
        await app.identity.users.create("ada@example.com", PASSWORD, "Ada")

    assert await _count(app, users) == 0


async def test_login(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session, its first refresh token and the reservation's give-back are one write
    (one statement on PostgreSQL): a first refresh token that cannot be stored (its hash
    taken) leaves no session, and the check stays counted."""
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    monkeypatch.setattr(sessions_module, "new_secret", lambda prefix: (prefix + "x", b"h" * 32))
    set_current_call(CallContext(peer="ipv4:192.0.2.9:1"))
    await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    before = await _rows(app, sessions, sessions.c.user_id == user.id)
    counters = LockoutPolicy().counters("ada@example.com", "192.0.2.9")
    counted = await SqlLoginFailureStore(app.platform.database).counts([c.key for c in counters])

    with pytest.raises(IntegrityError):
        await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")

    assert await _rows(app, sessions, sessions.c.user_id == user.id) == before
    assert await _count(app, refresh_tokens) == 1
    after = await SqlLoginFailureStore(app.platform.database).counts([c.key for c in counters])
    assert [c.failures for c in after] == [c.failures + 1 for c in counted]


async def _session_hashes(app: KeyholdServer, user: User) -> list[tuple[bytes, Any]]:
    async with app.platform.unit_of_work() as uow:
        rows = await uow.connection.execute(
            select(refresh_tokens.c.token_hash, refresh_tokens.c.spent_at)
            .join(sessions, sessions.c.id == refresh_tokens.c.session_id)
            .where(sessions.c.user_id == user.id)
        )
        return sorted((row.token_hash, row.spent_at) for row in rows)


async def test_a_retried_refresh(any_server: Server) -> None:
    """A retry within the grace counts the retry and spends the lost successor before it
    stores the new one: a new one that cannot be stored undoes both. (A first rotation's
    failure is `test_refresh_rotation.test_a_failed_rotation_writes_nothing`.)"""
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    other = await app.identity.sessions.login("ada@example.com", PASSWORD, "other")
    first = await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    rotator = SqlRefreshTokenRotator(app.platform.database, RetryGrace(dt.timedelta(minutes=1)))
    now = dt.datetime.now(dt.UTC)
    presented = hashlib.sha256(first.refresh_token.encode()).digest()
    lost = hashlib.sha256(b"lost answer").digest()
    rotated = await rotator.rotate(presented, lost, now, now + dt.timedelta(hours=1))
    assert rotated.outcome is RotationOutcome.ROTATED
    before = await _session_hashes(app, user)
    async with app.platform.unit_of_work() as uow:
        retries_before = await uow.connection.scalar(
            select(refresh_tokens.c.grace_retries).where(refresh_tokens.c.token_hash == presented)
        )
    taken = hashlib.sha256(other.refresh_token.encode()).digest()  # a live token's hash

    with pytest.raises(IntegrityError):
        await rotator.rotate(presented, taken, now, now + dt.timedelta(hours=1))

    assert await _session_hashes(app, user) == before  # the lost successor unspent
    async with app.platform.unit_of_work() as uow:
        retries = await uow.connection.scalar(
            select(refresh_tokens.c.grace_retries).where(refresh_tokens.c.token_hash == presented)
        )
    assert retries == retries_before == 0


async def _password_hash(app: KeyholdServer, user: User) -> str:
    async with app.platform.unit_of_work() as uow:
        stored = await uow.users.get(user.id)
    assert stored is not None
    return stored.password_hash


async def _live_sessions(app: KeyholdServer, user: User) -> int:
    rows = await _rows(
        app, sessions, sessions.c.user_id == user.id, sessions.c.revoked_at.is_(None)
    )
    return len(rows)


async def test_password_change(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    current = await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    await app.identity.sessions.login("ada@example.com", PASSWORD, "elsewhere")
    _acting_as(user, current.session.id)
    fail_after(monkeypatch, SqlSessionRepository, "revoke_for_user")  # after the update

    with pytest.raises(Injected):
        await app.identity.passwords.change(PASSWORD, NEW_PASSWORD)

    assert await _password_hash(app, user) == user.password_hash
    assert await _live_sessions(app, user) == 2


async def test_password_reset(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    token, _ = await app.identity.passwords.create_reset("ada@example.com")
    # The token is consumed, the password replaced, and then the sessions revoked.
    fail_after(monkeypatch, SqlSessionRepository, "revoke_for_user")

    with pytest.raises(Injected):
        await app.identity.passwords.reset(token, NEW_PASSWORD)

    assert await _password_hash(app, user) == user.password_hash
    assert await _live_sessions(app, user) == 1
    monkeypatch.undo()
    await app.identity.passwords.reset(token, NEW_PASSWORD)  # the token is still unused
    assert await _password_hash(app, user) != user.password_hash


async def test_password_reset_token_consumption(
    any_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    token, _ = await app.identity.passwords.create_reset("ada@example.com")
    fail_after(monkeypatch, SqlOneTimeTokenRepository, "consume")

    with pytest.raises(Injected):
        await app.identity.passwords.reset(token, NEW_PASSWORD)

    monkeypatch.undo()
    await app.identity.passwords.reset(token, NEW_PASSWORD)  # not consumed by the failure
    assert await _password_hash(app, user) != user.password_hash


async def test_user_update_that_ends_sessions(
    any_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = any_server
    admin = await _user(app, "admin@example.com")
    user = await _user(app, "ada@example.com")
    await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    _acting_as(admin, admin=True)
    fail_after(monkeypatch, SqlSessionRepository, "revoke_for_user")  # after the update

    with pytest.raises(Injected):
        await app.identity.users.update(user.name, UserPatch(state=UserState.DISABLED), ["state"])

    async with app.platform.unit_of_work() as uow:
        stored = await uow.users.get(user.id)
    assert stored is not None
    assert stored.is_active
    assert await _live_sessions(app, user) == 1


async def test_user_deletion(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    admin = await _user(app, "admin@example.com")
    user = await _user(app, "ada@example.com")
    await app.identity.sessions.login("ada@example.com", PASSWORD, "tests")
    _acting_as(admin, admin=True)
    fail_after(monkeypatch, SqlUserRepository, "delete")  # after the sessions' revocation

    with pytest.raises(Injected):
        await app.identity.users.delete(user.name)

    assert len(await _rows(app, users, users.c.id == user.id)) == 1
    assert await _live_sessions(app, user) == 1


async def test_service_account_creation(
    any_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = any_server
    fail_after(monkeypatch, SqlServiceAccountRepository, "add")

    with pytest.raises(Injected):
        await app.identity.service_accounts.create("batch", ["audit.read"])

    assert await _count(app, service_accounts) == 0


_API_KEY_PROVIDER = ProviderFields(display_name="Weather", auth_type=AuthType.API_KEY)


async def test_provider_registration(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    fail_after(monkeypatch, SqlProviderRepository, "add")  # a SAVEPOINT and an INSERT

    with pytest.raises(Injected):
        await app.providers.catalog.create("weather", _API_KEY_PROVIDER, "")

    assert await _count(app, providers) == 0


async def test_connection_creation(any_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    await app.providers.catalog.create("weather", _API_KEY_PROVIDER, "")
    _acting_as(user)
    fail_after(monkeypatch, SqlConnectionRepository, "add")  # row and sealed credentials

    with pytest.raises(Injected):
        await app.providers.connections.start("providers/weather", "", [], "an api key")

    assert await _count(app, connections) == 0


def _oauth_provider(token_endpoint: str) -> ProviderFields:
    return ProviderFields(
        display_name="Mail",
        auth_type=AuthType.OAUTH2,
        authorization_endpoint="http://127.0.0.1:1/authorize",
        token_endpoint=token_endpoint,
        client_id="keyhold",
        redirect_uris=("http://127.0.0.1:2/callback",),
    )


async def test_provider_update_that_moves_the_token_endpoint(
    any_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider is updated, then its connections are marked for reauthorization."""
    app, _ = any_server
    user = await _user(app, "ada@example.com")
    old = _oauth_provider("http://127.0.0.1:1/token")
    await app.providers.catalog.create("mail", old, "a client secret")
    _acting_as(user)
    pending, _ = await app.providers.connections.start(
        "providers/mail", "http://127.0.0.1:2/callback", [], ""
    )
    moved = _oauth_provider("http://127.0.0.1:3/token")
    fail_after(monkeypatch, SqlConnectionRepository, "require_reauthorization")

    with pytest.raises(Injected):
        await app.providers.catalog.update(
            "providers/mail", moved, ["token_endpoint"], "the new origin's secret"
        )

    (provider,) = await _rows(app, providers, providers.c.slug == "mail")
    assert provider.token_endpoint == old.token_endpoint
    (connection,) = await _rows(app, connections, connections.c.id == pending.id)
    assert connection.state == pending.state.value
