"""Service accounts through the API: creation and listing, the client-credentials grant
and its throttle, scopes at the door, deletion revoking tokens at once, introspection."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import inspect, text

from keyhold.application.pagination import encode_page_token
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.jose_canonical import with_low_s
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, bearer, service_token, signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
INACTIVE = pb.IntrospectTokenResponse(active=False)


def stub(channel: grpc.aio.Channel) -> pb_grpc.IdentityServiceStub:
    return pb_grpc.IdentityServiceStub(channel)


async def refused(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


async def admin_token(app: KeyholdServer) -> str:
    token, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    return token


async def create_account(
    channel: grpc.aio.Channel, admin: str, scopes: list[str], display_name: str = "Mailer"
) -> pb.CreateServiceAccountResponse:
    return await stub(channel).CreateServiceAccount(
        pb.CreateServiceAccountRequest(display_name=display_name, scopes=scopes),
        metadata=bearer(admin),
    )


async def grant(
    channel: grpc.aio.Channel, client_id: str, secret: str, scopes: list[str] | None = None
) -> pb.CreateServiceTokenResponse:
    return await stub(channel).CreateServiceToken(
        pb.CreateServiceTokenRequest(client_id=client_id, client_secret=secret, scopes=scopes)
    )


async def scalar(app: KeyholdServer, sql: str, **params: object) -> Any:
    async with app.platform.database.engine.connect() as connection:
        return await connection.scalar(text(sql), params)


async def rows(app: KeyholdServer, sql: str, **params: object) -> list[Any]:
    async with app.platform.database.engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def database_dump(app: KeyholdServer) -> bytes:
    """Every value of every table the database holds, as bytes."""
    chunks: list[bytes] = []
    async with app.platform.database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "service_accounts" in tables
        for table in tables:
            for row in await connection.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\x00".join(chunks)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def sign(claims: dict[str, Any], key: Any, key_id: str, algorithm: str = "ES256") -> str:
    """In canonical form (low S), as Keyhold signs."""
    token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": key_id, "typ": "at+jwt"})
    return with_low_s(token) if algorithm == "ES256" else token


def server_signed(app: KeyholdServer, claims: dict[str, Any]) -> str:
    """`claims` signed with the server's own current signing key, as it signs tokens."""
    signer = app.identity.key_ring.signer
    return sign(claims, signer.private_key, signer.key_id, signer.algorithm)


# --- CreateServiceAccount ---------------------------------------------------------------


async def test_create_returns_the_secret_once_and_stores_only_a_hash(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = await create_account(channel, admin, ["identity.introspect", "audit.read"])
    account, secret = created.service_account, created.client_secret
    assert account.name.startswith("service-accounts/")
    assert len(account.name) > len("service-accounts/")
    assert account.client_id.startswith("khc_")
    assert account.display_name == "Mailer"
    assert list(account.scopes) == ["audit.read", "identity.introspect"]
    assert account.create_time.seconds == pytest.approx(time.time(), abs=10)
    assert secret.startswith("khs_")
    assert len(secret) >= len("khs_") + 40
    # The secret works, so it is the real one and not a decoy.
    issued = await grant(channel, account.client_id, secret)

    dump = await database_dump(app)
    assert account.client_id.encode() in dump  # the dump does see the account's row
    for leaked in (secret, secret.removeprefix("khs_"), issued.access_token):
        assert leaked.encode() not in dump
    trail = await rows(
        app,
        "SELECT action, outcome, resource_name, details FROM audit_events "
        "WHERE action LIKE 'identity.service_%' ORDER BY sequence",
    )
    assert [(action, outcome) for action, outcome, _, _ in trail] == [
        ("identity.service_account.create", "attempted"),
        ("identity.service_account.create", "succeeded"),
        ("identity.service_token.create", "attempted"),
        ("identity.service_token.create", "succeeded"),
    ]
    # The grant's attempt is written before the client is known; its outcome names it.
    assert [name for _, _, name, _ in trail] == [account.name, account.name, "", account.name]
    for *_, details in trail:
        assert secret.removeprefix("khs_") not in details
    assert account.client_id in trail[1][3]


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        (
            "CreateServiceAccount",
            pb.CreateServiceAccountRequest(display_name="x", scopes=["audit.read"]),
        ),
        ("ListServiceAccounts", pb.ListServiceAccountsRequest()),
        ("DeleteServiceAccount", pb.DeleteServiceAccountRequest(name="service-accounts/x")),
    ],
    ids=["create", "list", "delete"],
)
async def test_service_accounts_are_for_admins_only(
    server: Server, method: str, request_message: Any
) -> None:
    app, channel = server
    user, _ = await signed_in(app, "ada@example.com")
    service = await service_token(app, ("audit.read", "identity.introspect"))
    call = getattr(stub(channel), method)
    error = await refused(call(request_message, metadata=bearer(user)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    error = await refused(call(request_message, metadata=bearer(service)))
    assert (error.code, error.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRINCIPAL_TYPE_NOT_ALLOWED",
    )
    error = await refused(call(request_message))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    assert await scalar(app, "SELECT count(*) FROM service_accounts") == 1  # service_token's


async def test_unknown_scope_is_invalid_and_writes_nothing(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    error = await refused(create_account(channel, admin, ["audit.read", "audit.write"]))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SCOPE_UNKNOWN")
    assert "audit.write" in error.message
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["scopes"]
    assert await scalar(app, "SELECT count(*) FROM service_accounts") == 0
    assert (
        await scalar(
            app,
            "SELECT count(*) FROM audit_events WHERE action = 'identity.service_account.create'",
        )
        == 0
    )


# --- ListServiceAccounts ----------------------------------------------------------------


async def test_list_pages_through_every_account_once(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = [
        (await create_account(channel, admin, ["audit.read"], f"svc {i}")).service_account.name
        for i in range(5)
    ]
    seen: list[str] = []
    pages: list[int] = []
    token = ""
    while True:
        page = await stub(channel).ListServiceAccounts(
            pb.ListServiceAccountsRequest(page_size=2, page_token=token), metadata=bearer(admin)
        )
        seen += [account.name for account in page.service_accounts]
        pages.append(len(page.service_accounts))
        assert all(a.client_id.startswith("khc_") for a in page.service_accounts)
        token = page.next_page_token
        if not token:
            break
    assert pages == [2, 2, 1]
    assert len(seen) == len(set(seen)) == 5
    assert seen == created  # oldest first


async def test_list_refuses_forged_page_tokens(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    for index in range(3):
        await create_account(channel, admin, ["audit.read"], f"svc {index}")
        await app.identity.users.create(f"user{index}@example.com", PASSWORD, "U")
    identity = stub(channel)
    real = await identity.ListServiceAccounts(
        pb.ListServiceAccountsRequest(page_size=1), metadata=bearer(admin)
    )
    payload = json.loads(base64.urlsafe_b64decode(real.next_page_token + "=="))
    tampered = dict(payload, q="0" * 16)
    users_page = await identity.ListUsers(pb.ListUsersRequest(page_size=1), metadata=bearer(admin))
    assert users_page.next_page_token
    forged = [
        "x",
        "not base64 at all!",
        base64.urlsafe_b64encode(json.dumps(tampered).encode()).decode(),
        users_page.next_page_token,  # a real token, but for another query
        encode_page_token(["not a time", "id"], "service-accounts"),
        encode_page_token("just a string", "service-accounts"),
        "A" * 600,
    ]
    for token in forged:
        error = await refused(
            identity.ListServiceAccounts(
                pb.ListServiceAccountsRequest(page_size=1, page_token=token),
                metadata=bearer(admin),
            )
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAGE_TOKEN_INVALID",
        ), token
    error = await refused(
        identity.ListServiceAccounts(
            pb.ListServiceAccountsRequest(page_size=-1), metadata=bearer(admin)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_SIZE_INVALID")


# --- CreateServiceToken -----------------------------------------------------------------


async def test_client_credentials_grant_issues_scoped_tokens(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = await create_account(channel, admin, ["identity.introspect", "audit.read"])
    account, secret = created.service_account, created.client_secret

    everything = await grant(channel, account.client_id, secret)
    assert list(everything.scopes) == ["audit.read", "identity.introspect"]
    claims = claims_of(everything.access_token)
    assert claims["sub"] == account.name
    assert claims["scope"] == "audit.read identity.introspect"
    assert "sid" not in claims
    assert claims["roles"] == []
    assert (claims["iss"], claims["aud"]) == ("keyhold", "keyhold")
    assert everything.access_token_expire_time.seconds == claims["exp"]
    assert claims["exp"] - time.time() == pytest.approx(900, abs=10)
    assert jwt.get_unverified_header(everything.access_token)["typ"] == "at+jwt"

    subset = await grant(channel, account.client_id, secret, ["audit.read"])
    assert list(subset.scopes) == ["audit.read"]
    assert claims_of(subset.access_token)["scope"] == "audit.read"
    assert claims_of(subset.access_token)["jti"] != claims["jti"]

    error = await refused(grant(channel, account.client_id, secret, ["identity.verification"]))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_NOT_GRANTED")
    assert "identity.verification" in error.message
    error = await refused(
        grant(channel, account.client_id, secret, ["audit.read", "identity.password_reset"])
    )
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_NOT_GRANTED")
    error = await refused(grant(channel, account.client_id, secret, ["audit.everything"]))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SCOPE_UNKNOWN")
    assert error.bad_request is not None

    outcomes = await rows(
        app,
        "SELECT outcome, reason, resource_name FROM audit_events "
        "WHERE action = 'identity.service_token.create' AND outcome != 'attempted' "
        "ORDER BY sequence",
    )
    assert outcomes == [
        ("succeeded", "", account.name),
        ("succeeded", "", account.name),
        ("denied", "SCOPE_NOT_GRANTED", account.name),
        ("denied", "SCOPE_NOT_GRANTED", account.name),
        ("failed", "SCOPE_UNKNOWN", account.name),
    ]


async def test_wrong_secret_and_unknown_client_fail_alike_and_are_audited(
    server: Server,
) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = await create_account(channel, admin, ["audit.read"])
    client_id, secret = created.service_account.client_id, created.client_secret
    other = await create_account(channel, admin, ["audit.read"], "Other")
    wrong = "khs_" + "w" * 43
    attempts = [
        (client_id, wrong, []),
        (client_id, secret + "x", []),
        (client_id, "", []),
        (client_id, other.client_secret, []),  # another account's real secret
        ("khc_" + "u" * 22, secret, []),  # unknown client, a real secret
        ("khc_" + "u" * 22, wrong, []),
        ("", secret, []),
        ("khc_" + "l" * 100, secret, []),
        (client_id, "s" * 1000, []),
        (client_id.upper(), secret, []),  # client ids are case-sensitive
        (client_id, wrong, ["audit.nonsense"]),  # credentials are checked before scopes
        (client_id, wrong, ["identity.introspect"]),
    ]
    answers = set()
    for attempt_client, attempt_secret, scopes in attempts:
        error = await refused(grant(channel, attempt_client, attempt_secret, scopes))
        answers.add((error.code, error.reason, error.message))
        assert error.error_info is not None
        assert error.error_info.domain == "keyhold.identity"
    assert answers == {
        (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT", "the client credentials are wrong")
    }
    denied = await rows(
        app,
        "SELECT reason, resource_name, details FROM audit_events "
        "WHERE action = 'identity.service_token.create' AND outcome = 'denied'",
    )
    assert len(denied) == len(attempts)
    assert {reason for reason, _, _ in denied} == {"INVALID_CLIENT"}
    assert {name for _, name, _ in denied} == {""}  # nothing reveals whether a client exists
    attempted = await scalar(
        app,
        "SELECT count(*) FROM audit_events "
        "WHERE action = 'identity.service_token.create' AND outcome = 'attempted'",
    )
    assert attempted == len(attempts)
    dump = await database_dump(app)
    for leaked in (secret, wrong, other.client_secret, "s" * 1000):
        assert leaked.encode() not in dump
    # The account still works with its real secret.
    await grant(channel, client_id, secret)


async def test_the_grant_is_throttled_per_client_id(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = await create_account(channel, admin, ["audit.read"])
    client_id = created.service_account.client_id
    reasons = []
    for index in range(120):
        error = await refused(grant(channel, client_id, f"khs_wrong_{index}"))
        reasons.append((error.code, error.reason))
    assert reasons == [(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")] * 120
    error = await refused(grant(channel, client_id, "khs_wrong_121"))
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_info is not None
    assert 0 < error.retry_info.retry_delay.seconds <= 60
    # The throttled call never reached the handler: only the 120 failures are audited.
    audited = await rows(
        app,
        "SELECT outcome, reason, count(*) FROM audit_events "
        "WHERE action = 'identity.service_token.create' AND resource_name = '' "
        "GROUP BY outcome, reason ORDER BY outcome",
    )
    assert audited == [("attempted", "", 120), ("denied", "INVALID_CLIENT", 120)]
    # Another client id has its own budget.
    other = await create_account(channel, admin, ["audit.read"], "Other")
    issued = await grant(channel, other.service_account.client_id, other.client_secret)
    assert issued.access_token


# --- Service tokens at the door ---------------------------------------------------------


async def test_a_service_token_opens_exactly_its_scopes(server: Server) -> None:
    app, channel = server
    admin = await admin_token(app)
    created = await create_account(channel, admin, ["audit.read", "identity.introspect"])
    account, secret = created.service_account, created.client_secret
    token = (await grant(channel, account.client_id, secret, ["audit.read"])).access_token
    audit = audit_grpc.AuditServiceStub(channel)
    listed = await audit.ListAuditEvents(
        audit_pb.ListAuditEventsRequest(action="identity.service_account.create"),
        metadata=bearer(token),
    )
    assert {event.resource_name for event in listed.events} == {account.name}

    who = await stub(channel).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    assert (who.subject, who.subject_type) == (account.name, pb.SUBJECT_TYPE_SERVICE)
    assert list(who.scopes) == ["audit.read"]
    assert who.session == ""

    error = await refused(
        stub(channel).CreateEmailVerification(
            pb.CreateEmailVerificationRequest(name="users/me"), metadata=bearer(token)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED")
    # The account holds identity.introspect, but this token was not granted it.
    error = await refused(
        stub(channel).IntrospectToken(
            pb.IntrospectTokenRequest(token=token), metadata=bearer(token)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED")
    # A user-only method refuses service principals whatever their scopes.
    error = await refused(
        stub(channel).GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRINCIPAL_TYPE_NOT_ALLOWED",
    )


# --- DeleteServiceAccount ---------------------------------------------------------------


async def test_deleting_an_account_refuses_its_tokens_at_once(any_server: Server) -> None:
    app, channel = any_server
    admin = await admin_token(app)
    introspector = await service_token(app, ("identity.introspect",), name="introspector")
    created = await create_account(channel, admin, ["audit.read"])
    account, secret = created.service_account, created.client_secret
    token = (await grant(channel, account.client_id, secret)).access_token
    identity = stub(channel)
    audit = audit_grpc.AuditServiceStub(channel)
    # Used once, so the account is cached as live in this process.
    await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    await audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(), metadata=bearer(token))
    before = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=token), metadata=bearer(introspector)
    )
    assert before.active

    await identity.DeleteServiceAccount(
        pb.DeleteServiceAccountRequest(name=account.name), metadata=bearer(admin)
    )
    for call in (
        identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token)),
        audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(), metadata=bearer(token)),
    ):
        error = await refused(call)
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "SERVICE_ACCOUNT_REVOKED",
        )
    after = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=token), metadata=bearer(introspector)
    )
    assert after == INACTIVE
    error = await refused(grant(channel, account.client_id, secret))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")
    listed = await identity.ListServiceAccounts(
        pb.ListServiceAccountsRequest(), metadata=bearer(admin)
    )
    assert account.name not in {a.name for a in listed.service_accounts}
    # The other account's token is unaffected.
    await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(introspector))

    error = await refused(
        identity.DeleteServiceAccount(
            pb.DeleteServiceAccountRequest(name=account.name), metadata=bearer(admin)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SERVICE_ACCOUNT_NOT_FOUND")
    for malformed in (
        "",
        "service-accounts/",
        "service-accounts/a/b",
        "service-accounts/" + "a" * 65,
        "users/" + account.name.removeprefix("service-accounts/"),
        account.name.removeprefix("service-accounts/"),
        "service-accounts/ab cd",
    ):
        error = await refused(
            identity.DeleteServiceAccount(
                pb.DeleteServiceAccountRequest(name=malformed), metadata=bearer(admin)
            )
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "RESOURCE_NAME_INVALID",
        ), malformed
    outcomes = await rows(
        app,
        "SELECT outcome, reason FROM audit_events "
        "WHERE action = 'identity.service_account.delete' AND resource_name = :name "
        "ORDER BY sequence",
        name=account.name,
    )
    assert outcomes == [
        ("attempted", ""),
        ("succeeded", ""),
        ("attempted", ""),
        ("failed", "SERVICE_ACCOUNT_NOT_FOUND"),
    ]


# --- IntrospectToken --------------------------------------------------------------------


async def test_introspecting_live_user_and_service_tokens(server: Server) -> None:
    app, channel = server
    introspector = await service_token(app, ("identity.introspect",))
    user_token, user_name = await signed_in(app, "ada@example.com")
    identity = stub(channel)

    found = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=user_token), metadata=bearer(introspector)
    )
    claims = claims_of(user_token)
    assert found.active
    assert found.subject == user_name
    assert found.subject.startswith("users/")
    assert found.subject_type == pb.SUBJECT_TYPE_USER
    assert found.session == f"sessions/{claims['sid']}"
    assert list(found.roles) == ["user"]
    assert list(found.scopes) == []
    assert found.token_id == claims["jti"]
    assert found.expire_time.seconds == claims["exp"]
    assert found.issue_time.seconds == claims["iat"]
    assert found.expire_time.seconds > found.issue_time.seconds > 0

    created = await app.identity.service_accounts.create("reader", ["audit.read"])
    account, secret = created
    issued = await grant(channel, account.client_id, secret)
    found = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=issued.access_token), metadata=bearer(introspector)
    )
    assert found.active
    assert (found.subject, found.subject_type) == (account.name, pb.SUBJECT_TYPE_SERVICE)
    assert list(found.scopes) == ["audit.read"]
    assert (list(found.roles), found.session) == ([], "")
    assert found.expire_time.seconds == issued.access_token_expire_time.seconds
    assert found.issue_time.seconds > 0
    # The introspector may introspect itself.
    found = await identity.IntrospectToken(
        pb.IntrospectTokenRequest(token=introspector), metadata=bearer(introspector)
    )
    assert (found.active, list(found.scopes)) == (True, ["identity.introspect"])


async def _user(app: KeyholdServer, email: str = "grace@example.com") -> str:
    await app.identity.users.create(email, PASSWORD, "Grace")
    return email


async def test_inactive_tokens_are_an_answer_not_an_error(server: Server) -> None:
    app, channel = server
    introspector = await service_token(app, ("identity.introspect",))
    identity = stub(channel)

    async def introspect(token: str) -> pb.IntrospectTokenResponse:
        return await identity.IntrospectToken(
            pb.IntrospectTokenRequest(token=token), metadata=bearer(introspector)
        )

    session = await identity.CreateSession(
        pb.CreateSessionRequest(email=await _user(app), password=PASSWORD)
    )
    live = claims_of(session.access_token)
    now = int(time.time())
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    server_key_id = app.identity.key_ring.signer.key_id

    # Controls: the server's key signs these the way the server does, and they are active,
    # so each inactive case below is inactive for the one reason it differs by.
    assert (await introspect(server_signed(app, live))).active
    padded = dict(live, pad="p" * 8000)
    assert (await introspect(server_signed(app, dict(padded, pad="p")))).active

    expired = dict(live, iat=now - 4000, nbf=now - 4000, exp=now - 3000)
    cases = {
        "garbage": "not-a-jwt",
        "empty": "",
        "dots": "a.b.c",
        "over 8 KiB, signed by the server": server_signed(app, padded),
        "over 8 KiB, garbage": "x" * (8 * 1024 + 1),
        "foreign key, made-up kid": sign(live, foreign_key, "made-up-kid"),
        "foreign key, the server's kid": sign(live, foreign_key, server_key_id),
        "expired, signed by the server": server_signed(app, expired),
        "unsigned": jwt.encode(
            live, None, algorithm="none", headers={"kid": server_key_id, "typ": "at+jwt"}
        ),
        "another audience": server_signed(app, dict(live, aud="elsewhere")),
        "not an access token": jwt.encode(
            live,
            app.identity.key_ring.signer.private_key,
            algorithm="ES256",
            headers={"kid": server_key_id, "typ": "JWT"},
        ),
    }
    assert len(cases["over 8 KiB, signed by the server"]) > 8 * 1024
    for label, token in cases.items():
        assert await introspect(token) == INACTIVE, label

    assert (await introspect(session.access_token)).active
    await identity.DeleteSession(
        pb.DeleteSessionRequest(name="sessions/current"), metadata=bearer(session.access_token)
    )
    assert await introspect(session.access_token) == INACTIVE
    assert await introspect(server_signed(app, live)) == INACTIVE  # same session, also ended


async def test_introspection_needs_the_introspect_scope(server: Server) -> None:
    app, channel = server
    user, _ = await signed_in(app, "ada@example.com")
    reader = await service_token(app, ("audit.read",), name="reader")
    identity = stub(channel)
    for caller in (user, reader):
        error = await refused(
            identity.IntrospectToken(pb.IntrospectTokenRequest(token=user), metadata=bearer(caller))
        )
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED")
    error = await refused(identity.IntrospectToken(pb.IntrospectTokenRequest(token=user)))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
