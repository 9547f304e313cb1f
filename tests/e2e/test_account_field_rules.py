"""Passwords of only blank characters, and email domains that are not valid IDNA names
or mix scripts in a label, are refused with INVALID_ARGUMENT and a BadRequest naming the
field, writing nothing; logging in with such an address answers as for any unknown one."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select

from keyhold.adapters.persistence.tables import users
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, bearer, service_token, signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]

BLANK_PASSWORDS = {
    "spaces": " " * 12,
    "tabs-and-newlines": "\t\n" * 8,
    "ideographic-spaces": "\u3000" * 12,
    "zero-width": "\u200b" * 12,
}
BAD_DOMAINS = {
    "cyrillic-a-in-latin": "ada@p\u0430ypal.com",
    "greek-in-latin": "ada@ex\u03b1mple.com",
    "punycode-of-a-mix": "ada@xn--pypal-4ve.com",
    "underscore": "ada@exa_mple.com",
    "bad-punycode": "ada@xn--abc.com",
    "hyphens-3-4": "ada@ex--ample.com",
    "label-over-63": f"ada@{'a' * 64}.com",
    "fullwidth-unmapped": "ada@\uff45xample.com",
}


async def refusal(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


async def user_count(app: KeyholdServer) -> int:
    async with app.platform.database.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(users)) or 0)


def create(channel: grpc.aio.Channel, email: str, password: str, token: str) -> object:
    return pb_grpc.IdentityServiceStub(channel).CreateUser(
        pb.CreateUserRequest(email=email, password=password, display_name="Ada"),
        metadata=bearer(token),
    )


def assert_invalid(error: RichError, reason: str, field: str) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == [field]


@pytest.mark.parametrize("password", BLANK_PASSWORDS.values(), ids=BLANK_PASSWORDS.keys())
async def test_create_user_refuses_a_blank_password(server: Server, password: str) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    error = await refusal(create(channel, "ada@example.com", password, admin))
    assert_invalid(error, "PASSWORD_BLANK", "password")
    assert await user_count(app) == 1


@pytest.mark.parametrize("email", BAD_DOMAINS.values(), ids=BAD_DOMAINS.keys())
async def test_create_user_refuses_a_bad_email_domain(server: Server, email: str) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    error = await refusal(create(channel, email, PASSWORD, admin))
    assert_invalid(error, "EMAIL_INVALID", "email")
    assert await user_count(app) == 1


@pytest.mark.parametrize(
    "email", ["ada@b\u00fccher.example", "ada@xn--bcher-kva.example", "ada@\u4f8b\u3048.jp"]
)
async def test_internationalised_domains_are_accepted(server: Server, email: str) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    created = await create(channel, email, PASSWORD, admin)
    assert created.user.email == email  # type: ignore[attr-defined]
    identity = pb_grpc.IdentityServiceStub(channel)
    await identity.CreateSession(pb.CreateSessionRequest(email=email, password=PASSWORD))


async def test_logging_in_with_a_bad_domain_answers_as_for_an_unknown_address(
    server: Server,
) -> None:
    _, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    answers = [
        await refusal(identity.CreateSession(pb.CreateSessionRequest(email=e, password=PASSWORD)))
        for e in ("nobody@example.com", *list(BAD_DOMAINS.values())[:3])
    ]
    assert {(a.code, a.reason) for a in answers} == {
        (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    }


async def test_change_password_refuses_a_blank_one(server: Server) -> None:
    app, channel = server
    token, _ = await signed_in(app, "ada@example.com")
    identity = pb_grpc.IdentityServiceStub(channel)
    for password in BLANK_PASSWORDS.values():
        error = await refusal(
            identity.ChangePassword(
                pb.ChangePasswordRequest(current_password=PASSWORD, new_password=password),
                metadata=bearer(token),
            )
        )
        assert_invalid(error, "PASSWORD_BLANK", "new_password")
    await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
    )


async def test_reset_password_refuses_a_blank_one(server: Server) -> None:
    app, channel = server
    await signed_in(app, "ada@example.com")
    identity = pb_grpc.IdentityServiceStub(channel)
    mailer = await service_token(app, ("identity.password_reset",))
    reset = await identity.CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="ada@example.com"), metadata=bearer(mailer)
    )
    for password in BLANK_PASSWORDS.values():
        error = await refusal(
            identity.ResetPassword(
                pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password=password)
            )
        )
        assert_invalid(error, "PASSWORD_BLANK", "new_password")
    await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
    )
