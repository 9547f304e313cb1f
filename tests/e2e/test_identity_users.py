"""Users through the API: registration rules, password policy, reads, updates, deletion."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import func, select, text

from keyhold.adapters.persistence.tables import audit_events, users
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, bearer, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


async def count(app: KeyholdServer, table: object) -> int:
    async with app.platform.database.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)))  # type: ignore[arg-type]


async def create(
    channel: grpc.aio.Channel, email: str, password: str = PASSWORD, token: str = ""
) -> pb.User:
    """Self-service sign-up (an empty answer), or an admin's call with `token`."""
    response = await pb_grpc.IdentityServiceStub(channel).CreateUser(
        pb.CreateUserRequest(email=email, password=password, display_name="Ada"),
        metadata=bearer(token) if token else None,
    )
    return response.user


async def test_create_user_normalises_email_and_defaults(server: Server) -> None:
    app, channel = server
    await create(channel, "  Ada.Lovelace@Example.COM ")
    async with app.platform.database.engine.connect() as connection:
        user = (await connection.execute(select(users))).one()
    assert user.email == "ada.lovelace@example.com"
    assert user.state == "active"
    assert not user.email_verified
    assert user.roles == '["user"]'
    stored = user.password_hash
    assert stored.startswith("$argon2id$v=19$m=7168,t=1,p=1$")
    assert PASSWORD not in stored
    async with app.platform.database.engine.connect() as connection:
        actions = (
            await connection.execute(select(audit_events.c.action, audit_events.c.outcome))
        ).all()
    assert actions == [("identity.user.create", "attempted"), ("identity.user.create", "succeeded")]


async def test_duplicate_email_is_already_exists_for_an_admin(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    created = await create(channel, "ada@example.com", token=admin)
    assert created.name.startswith("users/")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(channel, "ADA@example.com", token=admin)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert await count(app, users) == 2


@pytest.mark.parametrize(
    ("email", "password", "reason", "field"),
    [
        ("not-an-email", PASSWORD, "EMAIL_INVALID", "email"),
        ("a@b", PASSWORD, "EMAIL_INVALID", "email"),
        ("a b@example.com", PASSWORD, "EMAIL_INVALID", "email"),
        ("a@example.com\u0007", PASSWORD, "EMAIL_INVALID", "email"),
        ("a@example.com\u0000", PASSWORD, "NUL_CHARACTER", "email"),  # refused for any field
        ("x" * 250 + "@example.com", PASSWORD, "FIELD_TOO_LONG", "email"),  # over 254
        ("ada@example.com", "eleven-char", "PASSWORD_TOO_SHORT", "password"),
        ("ada@example.com", "p" * 129, "FIELD_TOO_LONG", "password"),  # over 128
        ("ada@example.com", "123qweasdzxc", "PASSWORD_TOO_COMMON", "password"),
        ("ada@example.com", "1QAZ2WSX3EDC", "PASSWORD_TOO_COMMON", "password"),
        ("lovelace@example.com", "my lovelace secret", "PASSWORD_CONTAINS_EMAIL", "password"),
    ],
)
async def test_invalid_registration_is_refused_and_writes_nothing(
    server: Server, email: str, password: str, reason: str, field: str
) -> None:
    app, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(channel, email, password)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.bad_request is not None
    assert error.bad_request.field_violations[0].field == field
    assert await count(app, users) == 0
    assert await count(app, audit_events) == 0


async def test_a_128_character_password_is_accepted_whole(server: Server) -> None:
    _, channel = server
    password = "p" * 127 + "q"
    await create(channel, "ada@example.com", password)
    stub = pb_grpc.IdentityServiceStub(channel)
    await stub.CreateSession(pb.CreateSessionRequest(email="ada@example.com", password=password))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSession(
            pb.CreateSessionRequest(email="ada@example.com", password=password[:-1] + "x")
        )
    assert rich_error(caught.value).reason == "INVALID_CREDENTIALS"


async def test_get_user_and_list_users_with_pages(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    for index in range(5):
        await create(channel, f"user{index}@example.com")
    stub = pb_grpc.IdentityServiceStub(channel)
    me = await stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(admin))
    assert me.user.email == "admin@example.com"
    seen, token = [], ""
    while True:
        page = await stub.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=token), metadata=bearer(admin)
        )
        seen += [user.email for user in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen[0] == "admin@example.com"
    assert len(seen) == len(set(seen)) == 6
    for bad in (pb.ListUsersRequest(page_size=-1), pb.ListUsersRequest(page_token="x")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListUsers(bad, metadata=bearer(admin))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(pb.GetUserRequest(name="users/nobody"), metadata=bearer(admin))
    assert rich_error(caught.value).reason == "USER_NOT_FOUND"


async def test_owner_updates_display_name_but_not_roles(server: Server) -> None:
    app, channel = server
    token, name = await signed_in(app)
    stub = pb_grpc.IdentityServiceStub(channel)
    updated = await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name="users/me", display_name="New Name"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        metadata=bearer(token),
    )
    assert updated.user.display_name == "New Name"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=name, roles=["admin"]), update_mask=FieldMask(paths=["roles"])
            ),
            metadata=bearer(token),
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "FIELD_NOT_UPDATABLE")


@pytest.mark.parametrize(
    ("mask", "user", "reason"),
    [
        ([], pb.User(display_name="x"), "UPDATE_MASK_INVALID"),
        (["email"], pb.User(email="x@example.com"), "UPDATE_MASK_INVALID"),
        (["roles"], pb.User(roles=["superuser"]), "ROLE_UNKNOWN"),
        (["roles"], pb.User(), "ROLE_UNKNOWN"),
        (["state"], pb.User(), "STATE_INVALID"),
        (["display_name"], pb.User(display_name="bad\u0007name"), "DISPLAY_NAME_INVALID"),
    ],
)
async def test_bad_updates_are_invalid(
    server: Server, mask: list[str], user: pb.User, reason: str
) -> None:
    app, channel = server
    admin, name = await signed_in(app, "admin@example.com", ("admin", "user"))
    user.name = name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).UpdateUser(
            pb.UpdateUserRequest(user=user, update_mask=FieldMask(paths=mask)),
            metadata=bearer(admin),
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_admin_role_change_and_disable_end_the_users_sessions(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    user_token, user_name = await signed_in(app, "ada@example.com")
    stub = pb_grpc.IdentityServiceStub(channel)
    await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(user_token))
    await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=user_name, roles=["user", "admin"]),
            update_mask=FieldMask(paths=["roles"]),
        ),
        metadata=bearer(admin),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(user_token))
    assert rich_error(caught.value).reason == "SESSION_REVOKED"
    await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=user_name, state=pb.USER_STATE_DISABLED),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=bearer(admin),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSession(
            pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
        )
    assert rich_error(caught.value).reason == "INVALID_CREDENTIALS"


async def test_delete_user_refuses_its_tokens_at_once_and_keeps_the_audit(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    token, name = await signed_in(app, "ada@example.com")
    stub = pb_grpc.IdentityServiceStub(channel)
    await stub.DeleteUser(pb.DeleteUserRequest(name=name), metadata=bearer(admin))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(pb.GetUserRequest(name=name), metadata=bearer(admin))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    async with app.platform.database.engine.connect() as connection:
        kept = await connection.scalar(
            text("SELECT count(*) FROM audit_events WHERE resource_name = :n"), {"n": name}
        )
    assert kept >= 2


async def test_concurrent_registration_with_one_email_has_one_winner(any_server: Server) -> None:
    app, channel = any_server
    admin, admin_name = await signed_in(app, "admin@example.com", ("admin", "user"))
    results = await asyncio.gather(
        *(create(channel, "race@example.com", token=admin) for _ in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, pb.User)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert {(e.code(), rich_error(e).reason) for e in losers} == {
        (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    }
    assert len(losers) == 19
    assert await count(app, users) == 2  # the admin and the winner
    async with app.platform.database.engine.connect() as connection:
        outcomes = (
            await connection.execute(
                select(audit_events.c.outcome, audit_events.c.reason, audit_events.c.resource_name)
                .where(audit_events.c.action == "identity.user.create")
                .where(audit_events.c.outcome != "attempted")
                .where(audit_events.c.resource_name != admin_name)
            )
        ).all()
    assert sorted((o.outcome, o.reason) for o in outcomes) == [("failed", "EMAIL_TAKEN")] * 19 + [
        ("succeeded", "")
    ]
    assert [o.resource_name for o in outcomes if o.outcome == "succeeded"] == [winners[0].name]
