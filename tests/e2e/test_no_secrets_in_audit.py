"""No password, token or secret a flow used ever reaches an audit record."""

from __future__ import annotations

import contextlib

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, bearer, service_token

Server = tuple[KeyholdServer, grpc.aio.Channel]


async def test_a_full_identity_flow_leaves_no_secret_in_the_trail(server: Server) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    secrets: list[str] = [PASSWORD]

    async def attempt(call: object) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call  # type: ignore[misc]

    await identity.CreateUser(
        pb.CreateUserRequest(email="ada@example.com", password=PASSWORD, display_name="Ada")
    )
    wrong = "not the right passphrase"
    secrets.append(wrong)
    await attempt(
        identity.CreateSession(pb.CreateSessionRequest(email="ada@example.com", password=wrong))
    )
    typo = "Correct Horse Battery Stapl"  # a password typed into the email field
    secrets.append(typo)
    await attempt(identity.CreateSession(pb.CreateSessionRequest(email=typo, password=PASSWORD)))
    session = await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
    )
    secrets += [session.access_token, session.refresh_token]
    refreshed = await identity.RefreshSession(
        pb.RefreshSessionRequest(refresh_token=session.refresh_token)
    )
    secrets += [refreshed.access_token, refreshed.refresh_token]
    await attempt(
        identity.RefreshSession(pb.RefreshSessionRequest(refresh_token=session.refresh_token))
    )
    again = await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=PASSWORD)
    )
    secrets += [again.access_token, again.refresh_token]
    new_password = "an entirely new passphrase"
    secrets.append(new_password)
    await identity.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
        metadata=bearer(again.access_token),
    )
    service = await service_token(
        app,
        (
            "identity.password_reset",
            "identity.verification",
            "audit.read",
        ),
    )
    secrets.append(service)
    reset = await identity.CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="ada@example.com"), metadata=bearer(service)
    )
    final_password = "the final passphrase here"
    secrets += [reset.reset_token, final_password]
    await identity.ResetPassword(
        pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password=final_password)
    )
    admin_session = await identity.CreateSession(
        pb.CreateSessionRequest(email="ada@example.com", password=final_password)
    )
    secrets += [admin_session.access_token, admin_session.refresh_token]
    verification = await identity.CreateEmailVerification(
        pb.CreateEmailVerificationRequest(name=admin_session.session.user),
        metadata=bearer(service),
    )
    secrets.append(verification.verification_token)
    await identity.VerifyEmail(
        pb.VerifyEmailRequest(verification_token=verification.verification_token)
    )
    await identity.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name="users/me", display_name="Ada L."),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        metadata=bearer(admin_session.access_token),
    )
    await attempt(identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(session.access_token)))
    await attempt(
        identity.WhoAmI(pb.WhoAmIRequest(), metadata=(("authorization", "Bearer " + PASSWORD),))
    )

    async with app.platform.database.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM audit_events"))).all()
    assert len(rows) > 25
    stored = "\n".join(
        (value.decode(errors="replace") if isinstance(value, bytes) else str(value))
        for row in rows
        for value in row
    )
    for secret in secrets:
        assert secret not in stored
        for part in secret.split("."):  # no JWT segment either
            assert len(part) < 16 or part not in stored
