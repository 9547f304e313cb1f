"""Sessions through the API: login, uniform failures, lockout, refresh rotation and reuse
detection, lifetimes, logout, password change and reset, email verification, keys."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import grpc
import jwt
import pytest
from sqlalchemy import text

from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.errors import ResourceExhausted, Unauthenticated
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.fakes import FakeClock
from tests.support.servers import (
    PASSWORD,
    bearer,
    running_server,
    service_token,
    settings_for,
    signed_in,
)
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
NEW_PASSWORD = "a completely new passphrase"


def stub(channel: grpc.aio.Channel) -> pb_grpc.IdentityServiceStub:
    return pb_grpc.IdentityServiceStub(channel)


async def login(
    channel: grpc.aio.Channel, email: str, password: str = PASSWORD
) -> pb.CreateSessionResponse:
    return await stub(channel).CreateSession(
        pb.CreateSessionRequest(email=email, password=password, user_agent="pytest")
    )


async def refused(call: object) -> tuple[grpc.StatusCode, str | None, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    return error.code, error.reason, error.message


async def test_login_whoami_refresh_and_logout(any_server: Server) -> None:
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    session = await login(channel, "ADA@example.com")
    assert session.refresh_token.startswith("khr_")
    assert session.access_token_expire_time.seconds - time.time() == pytest.approx(900, abs=5)
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert set(claims) >= {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "roles", "scope"}
    assert claims["sid"] == session.session.name.removeprefix("sessions/")
    who = await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(session.access_token))
    assert who.session == session.session.name
    assert (who.subject, who.subject_type) == (claims["sub"], pb.SUBJECT_TYPE_USER)
    assert list(who.roles) == sorted(claims["roles"])
    assert who.expire_time.seconds == claims["exp"]
    refreshed = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=session.refresh_token)
    )
    assert refreshed.refresh_token != session.refresh_token
    assert refreshed.session.name == session.session.name
    await stub(channel).DeleteSession(
        pb.DeleteSessionRequest(name="sessions/current"), metadata=bearer(refreshed.access_token)
    )
    for token in (session.access_token, refreshed.access_token):
        code, reason, _ = await refused(
            stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
        )
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


async def test_failures_are_uniform_for_unknown_wrong_and_disabled(server: Server) -> None:
    app, channel = server
    await signed_in(app, "ada@example.com")
    await signed_in(app, "off@example.com")
    async with app.platform.database.engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET state = 'disabled' WHERE email = 'off@example.com'")
        )
    outcomes = {
        await refused(login(channel, "nobody@example.com")),
        await refused(login(channel, "ada@example.com", "the wrong passphrase")),
        await refused(login(channel, "off@example.com")),
    }
    assert outcomes == {
        (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "the email or password is wrong")
    }


@pytest.mark.slow
async def test_unknown_email_takes_as_long_as_a_wrong_password(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        argon2_memory_kib=19 * 1024,
        argon2_time_cost=2,
        lockout_threshold=100,
        lockout_peer_threshold=10_000,
        rate_limits_enabled=False,
    )
    async with running_server(settings) as (app, channel):
        await signed_in(app, "ada@example.com")

        async def timed(email: str, password: str) -> float:
            started = time.perf_counter()
            await refused(login(channel, email, password))
            return time.perf_counter() - started

        unknown, wrong = [], []
        for index in range(15):
            unknown.append(await timed(f"nobody{index}@example.com", PASSWORD))
            wrong.append(await timed("ada@example.com", f"wrong passphrase {index}"))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.75 <= ratio <= 1.25, (statistics.median(unknown), statistics.median(wrong))


async def test_lockout_after_five_failures_per_account_and_peer(server: Server) -> None:
    app, channel = server
    await signed_in(app, "ada@example.com")
    for _ in range(5):
        _, reason, _ = await refused(login(channel, "ada@example.com", "wrong passphrase!"))
        assert reason == "INVALID_CREDENTIALS"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(channel, "ada@example.com")  # the right password, but locked
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")
    assert error.retry_info is not None
    assert 55 <= error.retry_info.retry_delay.seconds <= 60
    # The same account from another address is not locked out.
    set_current_call(CallContext(peer="ipv4:192.0.2.7:40000"))
    await app.identity.sessions.login("ada@example.com", PASSWORD, "elsewhere")


async def test_a_success_resets_the_count(server: Server) -> None:
    app, channel = server
    await signed_in(app, "ada@example.com")
    for _ in range(4):
        await refused(login(channel, "ada@example.com", "wrong passphrase!"))
    await login(channel, "ada@example.com")
    for _ in range(4):
        await refused(login(channel, "ada@example.com", "wrong passphrase!"))
    await login(channel, "ada@example.com")


async def test_cooldown_doubles_and_is_capped(tmp_path: Path) -> None:
    clock = FakeClock()
    from keyhold.server import build_server

    app = await build_server(settings_for(tmp_path), clock=clock)
    try:
        app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
        await app.identity.users.create("ada@example.com", PASSWORD, "Ada")
        set_current_call(CallContext(peer="ipv4:198.51.100.1:1"))
        cooldowns = []
        for _ in range(12):
            with pytest.raises((Unauthenticated, ResourceExhausted)) as caught:
                await app.identity.sessions.login("ada@example.com", "wrong passphrase!", "t")
            if isinstance(caught.value, ResourceExhausted):
                cooldowns.append(round(caught.value.retry_after_seconds))
                clock.advance(caught.value.retry_after_seconds + 1)
                with pytest.raises(Unauthenticated):  # the failure after the lock
                    await app.identity.sessions.login("ada@example.com", "wrong passphrase!", "t")
        assert cooldowns[:4] == [60, 120, 240, 480]
        assert max(cooldowns) == 900
    finally:
        await app.platform.database.dispose()
        app.identity.hasher.close()


async def _refresh_audit(app: KeyholdServer) -> list[tuple[str, str, str]]:
    async with app.platform.database.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT outcome, reason, details FROM audit_events "
                    "WHERE action = 'identity.session.refresh' AND outcome != 'attempted'"
                )
            )
        ).all()
    return [(r.outcome, r.reason, r.details) for r in rows]


async def test_a_retry_after_a_lost_response_keeps_the_session(any_server: Server) -> None:
    """The client never saw `lost`: it presents the token it holds again, within the
    grace, and gets a fresh pair of the same session instead of a revocation."""
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    first = await login(channel, "ada@example.com")
    lost = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=first.refresh_token)
    )

    retried = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=first.refresh_token)
    )

    assert retried.session.name == first.session.name
    assert retried.refresh_token not in (first.refresh_token, lost.refresh_token)
    who = await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(retried.access_token))
    assert who.session == first.session.name
    onwards = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=retried.refresh_token)
    )
    assert onwards.session.name == first.session.name
    audit = await _refresh_audit(app)
    assert not [row for row in audit if row[0] != "succeeded"]
    assert sum('"retried_within_grace": "true"' in details for _, _, details in audit) == 1


async def test_reused_refresh_token_revokes_the_family(any_server: Server) -> None:
    """A spent token whose successor has been used is no retry, within the grace or not."""
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    first = await login(channel, "ada@example.com")
    used = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=first.refresh_token)
    )
    second = await stub(channel).RefreshSession(
        pb.RefreshSessionRequest(refresh_token=used.refresh_token)
    )
    code, reason, _ = await refused(
        stub(channel).RefreshSession(pb.RefreshSessionRequest(refresh_token=first.refresh_token))
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    # The legitimate-looking newer token and its access token are dead too.
    code, reason, _ = await refused(
        stub(channel).RefreshSession(pb.RefreshSessionRequest(refresh_token=second.refresh_token))
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, reason, _ = await refused(
        stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(second.access_token))
    )
    assert reason == "SESSION_REVOKED"
    rows = await _refresh_audit(app)
    assert ("denied", "REFRESH_TOKEN_REUSED") in [(outcome, reason) for outcome, reason, _ in rows]
    assert any('"reuse_detected": "true"' in details for _, _, details in rows)


@pytest.mark.parametrize("token", ["", "khr_unknown", "x" * 300])
async def test_unknown_refresh_tokens_are_unauthenticated(any_server: Server, token: str) -> None:
    _, channel = any_server
    code, reason, _ = await refused(
        stub(channel).RefreshSession(pb.RefreshSessionRequest(refresh_token=token))
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_idle_timeout_and_absolute_lifetime(tmp_path: Path, engine: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database()) if engine != "sqlite" else None
        await _idle_and_absolute(tmp_path, url)


async def _idle_and_absolute(tmp_path: Path, url: str | None) -> None:
    clock = FakeClock()
    from keyhold.server import build_server

    settings = settings_for(
        tmp_path, url, session_idle_timeout_seconds=3600, refresh_token_lifetime_seconds=4 * 3600
    )
    app = await build_server(settings, clock=clock)
    try:
        app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
        await app.identity.users.create("ada@example.com", PASSWORD, "Ada")
        sessions = app.identity.sessions
        idle = await sessions.login("ada@example.com", PASSWORD, "t")
        clock.advance(3601)
        with pytest.raises(Exception, match="session has ended") as caught:
            await sessions.refresh(idle.refresh_token)
        assert caught.value.reason == "SESSION_EXPIRED"  # type: ignore[attr-defined]
        active = await sessions.login("ada@example.com", PASSWORD, "t")
        token = active.refresh_token
        for _ in range(4):  # refreshed within the idle timeout, up to the absolute end
            clock.advance(3000)
            token = (await sessions.refresh(token)).refresh_token
        clock.advance(3000)
        with pytest.raises(Exception, match="session has ended"):
            await sessions.refresh(token)
    finally:
        await app.platform.database.dispose()
        app.identity.hasher.close()


async def test_list_sessions_and_delete_only_ones_own(any_server: Server) -> None:
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    first = await login(channel, "ada@example.com")
    second = await login(channel, "ada@example.com")
    other_token, other_name = await signed_in(app, "bob@example.com")
    listed = await stub(channel).ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(first.access_token)
    )
    names = [s.name for s in listed.sessions]
    assert len(names) == 3  # signed_in's session, then first and second
    assert names.index(second.session.name) < names.index(first.session.name)  # newest first
    code, reason, _ = await refused(
        stub(channel).ListSessions(
            pb.ListSessionsRequest(parent=other_name), metadata=bearer(first.access_token)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_RESOURCE_OWNER")
    code, reason, _ = await refused(
        stub(channel).DeleteSession(
            pb.DeleteSessionRequest(name=second.session.name), metadata=bearer(other_token)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_RESOURCE_OWNER")
    await stub(channel).DeleteSession(
        pb.DeleteSessionRequest(name=second.session.name), metadata=bearer(first.access_token)
    )
    await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(first.access_token))
    code, reason, _ = await refused(
        stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(second.access_token))
    )
    assert reason == "SESSION_REVOKED"


@pytest.mark.postgres
@pytest.mark.parametrize("grace", [0, 10])
async def test_fifty_concurrent_refreshes_of_one_token_revoke_the_family(
    tmp_path: Path, grace: int
) -> None:
    """One spend wins; with a grace, as many retries as it allows may win too, never
    more; the rest is reuse, and the family ends revoked."""
    settings = settings_for(
        tmp_path, None, rate_limits_enabled=False, refresh_reuse_grace_seconds=grace
    )
    async with (
        postgres_database() as url,
        running_server(settings.model_copy(update={"database_url": url})) as (app, channel),
    ):
        await signed_in(app, "ada@example.com")
        session = await login(channel, "ada@example.com")
        results = await asyncio.gather(
            *(
                stub(channel).RefreshSession(
                    pb.RefreshSessionRequest(refresh_token=session.refresh_token)
                )
                for _ in range(50)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, pb.RefreshSessionResponse)]
        losers = [rich_error(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert 1 <= len(winners) <= 1 + (settings.refresh_reuse_grace_retries if grace else 0)
        assert len(winners) + len(losers) == 50
        assert "REFRESH_TOKEN_REUSED" in losers
        assert set(losers) <= {"REFRESH_TOKEN_REUSED", "SESSION_EXPIRED"}  # after the revoke
        for winner in winners:
            code, _, _ = await refused(
                stub(channel).RefreshSession(
                    pb.RefreshSessionRequest(refresh_token=winner.refresh_token)
                )
            )
            assert code is grpc.StatusCode.UNAUTHENTICATED  # the family is revoked


async def test_change_password_keeps_this_session_and_ends_the_others(any_server: Server) -> None:
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    here = await login(channel, "ada@example.com")
    there = await login(channel, "ada@example.com")
    code, reason, _ = await refused(
        stub(channel).ChangePassword(
            pb.ChangePasswordRequest(current_password="not it at all", new_password=NEW_PASSWORD),
            metadata=bearer(here.access_token),
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CURRENT_PASSWORD_WRONG")
    code, reason, _ = await refused(
        stub(channel).ChangePassword(
            pb.ChangePasswordRequest(current_password=PASSWORD, new_password="short"),
            metadata=bearer(here.access_token),
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_TOO_SHORT")
    await stub(channel).ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(here.access_token),
    )
    await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(here.access_token))
    _, reason, _ = await refused(
        stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(there.access_token))
    )
    assert reason == "SESSION_REVOKED"
    await login(channel, "ada@example.com", NEW_PASSWORD)
    _, reason, _ = await refused(login(channel, "ada@example.com"))
    assert reason == "INVALID_CREDENTIALS"


async def test_password_reset_is_single_use_and_ends_every_session(any_server: Server) -> None:
    app, channel = any_server
    await signed_in(app, "ada@example.com")
    session = await login(channel, "ada@example.com")
    mailer = await service_token(app, ("identity.password_reset",))
    none = await stub(channel).CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="nobody@example.com"), metadata=bearer(mailer)
    )
    assert none.reset_token == ""
    reset = await stub(channel).CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="ada@example.com"), metadata=bearer(mailer)
    )
    assert reset.reset_token.startswith("khp_")
    code, reason, _ = await refused(
        stub(channel).ResetPassword(
            pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password="ada1")
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_TOO_SHORT")
    await stub(channel).ResetPassword(  # the token survived the refused attempt
        pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password=NEW_PASSWORD)
    )
    _, reason, _ = await refused(
        stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(session.access_token))
    )
    assert reason == "SESSION_REVOKED"
    code, reason, _ = await refused(
        stub(channel).ResetPassword(
            pb.ResetPasswordRequest(reset_token=reset.reset_token, new_password=NEW_PASSWORD)
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RESET_TOKEN_INVALID")
    await login(channel, "ada@example.com", NEW_PASSWORD)


async def test_reset_tokens_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    from keyhold.server import build_server

    app = await build_server(settings_for(tmp_path), clock=clock)
    try:
        app.identity.key_ring.replace(await app.identity.signing_keys.ensure_signer())
        await app.identity.users.create("ada@example.com", PASSWORD, "Ada")
        token, _ = await app.identity.passwords.create_reset("ada@example.com")
        clock.advance(3601)
        with pytest.raises(Exception, match="unknown, used or expired"):
            await app.identity.passwords.reset(token, NEW_PASSWORD)
    finally:
        await app.platform.database.dispose()
        app.identity.hasher.close()


async def test_email_verification(server: Server) -> None:
    app, channel = server
    _, name = await signed_in(app, "ada@example.com")
    mailer = await service_token(app, ("identity.verification",))
    created = await stub(channel).CreateEmailVerification(
        pb.CreateEmailVerificationRequest(name=name), metadata=bearer(mailer)
    )
    assert created.verification_token.startswith("khv_")
    verified = await stub(channel).VerifyEmail(
        pb.VerifyEmailRequest(verification_token=created.verification_token)
    )
    assert verified.user.email_verified
    code, reason, _ = await refused(
        stub(channel).VerifyEmail(
            pb.VerifyEmailRequest(verification_token=created.verification_token)
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VERIFICATION_TOKEN_INVALID")
    code, reason, _ = await refused(
        stub(channel).CreateEmailVerification(
            pb.CreateEmailVerificationRequest(name=name), metadata=bearer(mailer)
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_ALREADY_VERIFIED")


async def test_generated_secrets_are_stored_only_as_hashes(server: Server) -> None:
    app, channel = server
    await signed_in(app, "ada@example.com")
    session = await login(channel, "ada@example.com")
    mailer = await service_token(app, ("identity.password_reset",))
    reset = await stub(channel).CreatePasswordReset(
        pb.CreatePasswordResetRequest(email="ada@example.com"), metadata=bearer(mailer)
    )
    dump = await database_dump(app)
    for secret in (session.refresh_token, reset.reset_token, PASSWORD, session.access_token):
        assert secret.encode() not in dump


async def database_dump(app: KeyholdServer) -> bytes:
    tables = [
        "users",
        "sessions",
        "refresh_tokens",
        "one_time_tokens",
        "signing_keys",
        "audit_events",
        "login_failures",
    ]
    chunks: list[bytes] = []
    async with app.platform.database.engine.connect() as connection:
        for table in tables:
            for row in await connection.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\x00".join(chunks)


async def test_rotate_signing_key_keeps_old_tokens_valid(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    old_kid = jwt.get_unverified_header(admin)["kid"]
    rotated = await stub(channel).RotateSigningKey(
        pb.RotateSigningKeyRequest(), metadata=bearer(admin)
    )
    assert rotated.key_id != old_kid
    await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(admin))
    fresh = await login(channel, "admin@example.com")
    assert jwt.get_unverified_header(fresh.access_token)["kid"] == rotated.key_id
    jwks = await stub(channel).GetJwks(pb.GetJwksRequest())
    assert {key.key_id for key in jwks.keys} == {old_kid, rotated.key_id}
