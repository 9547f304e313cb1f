"""Self-service sign-up does not tell which emails have accounts: CreateUser answers a
non-admin caller the same for a new and a taken email, and tells the owner of the
taken one instead. Admins get the user, or EMAIL_TAKEN. Sign-up can be turned off."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from keyhold.adapters.persistence.tables import users
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


def request(email: str, password: str = PASSWORD) -> pb.CreateUserRequest:
    return pb.CreateUserRequest(email=email, password=password, display_name="Ada")


async def user_count(app: KeyholdServer) -> int:
    async with app.platform.database.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(users)) or 0)


async def test_a_taken_email_is_answered_like_a_new_one(server: Server) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    with capture_logs() as logs:
        new = await identity.CreateUser(request("ada@example.com"))
        taken = await identity.CreateUser(request("ADA@example.com", PASSWORD + " again"))
    assert new == taken == pb.CreateUserResponse()  # same shape, nothing to tell apart
    assert new.SerializeToString() == taken.SerializeToString() == b""
    assert await user_count(app) == 1
    # The new user exists and can log in; the taken email's owner was told.
    session = await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
    )
    owner = (
        await identity.GetUser(
            pb.GetUserRequest(name="users/me"), metadata=bearer(session.access_token)
        )
    ).user
    notices = [entry for entry in logs if entry["event"] == "account_notice"]
    assert notices == [
        {
            "event": "account_notice",
            "log_level": "info",
            "notice": "sign_up_with_existing_email",
            "user": owner.name,
        }
    ]
    # The trail knows what the caller was not told.
    async with app.platform.database.engine.connect() as connection:
        outcomes = (
            await connection.execute(
                text(
                    "SELECT outcome, reason FROM audit_events WHERE action = "
                    "'identity.user.create' AND outcome != 'attempted' ORDER BY sequence"
                )
            )
        ).all()
    assert [tuple(row) for row in outcomes] == [("succeeded", ""), ("failed", "EMAIL_TAKEN")]


async def test_an_admin_gets_the_user_or_email_taken(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    identity = pb_grpc.IdentityServiceStub(channel)
    created = await identity.CreateUser(request("  Ada@Example.COM "), metadata=bearer(admin))
    assert created.user.email == "ada@example.com"
    assert created.user.name.startswith("users/")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateUser(request("ada@example.com"), metadata=bearer(admin))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")


async def test_a_user_who_is_not_an_admin_is_answered_like_anyone(server: Server) -> None:
    app, channel = server
    token, _ = await signed_in(app, "bob@example.com")
    identity = pb_grpc.IdentityServiceStub(channel)
    answer = await identity.CreateUser(request("bob@example.com"), metadata=bearer(token))
    assert answer == pb.CreateUserResponse()


async def test_sign_up_turned_off_leaves_it_to_admins(tmp_path: Path) -> None:
    async with running_server(settings_for(tmp_path, self_signup=False)) as (app, channel):
        identity = pb_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.CreateUser(request("ada@example.com"))
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SIGN_UP_DISABLED")
        assert await user_count(app) == 0
        admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
        created = await identity.CreateUser(request("ada@example.com"), metadata=bearer(admin))
        assert created.user.email == "ada@example.com"
