"""keyhold.client: credentials, channels, local verification, and the interceptor a
downstream service installs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyhold.application.identity.api_resources import Definition
from keyhold.client import (
    RequireKeyholdToken,
    ServiceAccountCredentials,
    TokenVerifier,
    current_principal,
    keyhold_channel,
    tls_channel_credentials,
)
from keyhold.domain.errors import Unauthenticated
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer, build_server
from tests.support.jws import high_s_twin
from tests.support.pki import make_pki
from tests.support.servers import running_server, settings_for, signed_in
from tests.support.status import rich_error

LOCAL = grpc.LocalConnectionType.LOCAL_TCP


@pytest.fixture
async def keyhold(tmp_path: Path) -> AsyncIterator[tuple[KeyholdServer, str, str]]:
    """A server with a plaintext port and a local-credentials port."""
    app = await build_server(settings_for(tmp_path))
    local_port = app.api.server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials(LOCAL))
    port = await app.start()
    try:
        yield app, f"127.0.0.1:{port}", f"127.0.0.1:{local_port}"
    finally:
        await app.stop(grace=0.2)


async def account(app: KeyholdServer, *scopes: str) -> tuple[str, str, str]:
    created, secret = await app.identity.service_accounts.create("client", list(scopes))
    return created.client_id, secret, created.name


async def test_a_hundred_concurrent_calls_make_one_token_request(
    keyhold: tuple[KeyholdServer, str, str],
) -> None:
    app, target, _ = keyhold
    client_id, secret, name = await account(app, "audit.read")
    credentials = ServiceAccountCredentials(client_id, secret)
    async with keyhold_channel(target, credentials) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        answers = await asyncio.gather(*(stub.WhoAmI(pb.WhoAmIRequest()) for _ in range(100)))
    assert {answer.subject for answer in answers} == {name}
    assert credentials.requests == 1


async def test_tokens_are_renewed_before_they_expire(
    keyhold: tuple[KeyholdServer, str, str],
) -> None:
    app, target, _ = keyhold
    client_id, secret, _ = await account(app)
    now = [1000.0]
    credentials = ServiceAccountCredentials(
        client_id, secret, renew_before_seconds=60, monotonic=lambda: now[0]
    )
    async with keyhold_channel(target, credentials) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        await stub.WhoAmI(pb.WhoAmIRequest())
        first = await credentials.token()
        # 15-minute tokens, their expiry in whole seconds: the client may see up to a
        # second less than 900 (the part of a second the server's `iat` dropped).
        now[0] += 900 - 62  # still a minute and one to two seconds to go
        assert await credentials.token() == first
        now[0] += 3  # inside the renewal margin
        await stub.WhoAmI(pb.WhoAmIRequest())
        assert credentials.requests == 2
        assert await credentials.token() != first


async def test_call_credentials_over_a_local_credentials_channel(
    keyhold: tuple[KeyholdServer, str, str],
) -> None:
    app, _, local_target = keyhold
    client_id, secret, name = await account(app, "audit.read")
    credentials = ServiceAccountCredentials(client_id, secret, ["audit.read"])
    channel = keyhold_channel(
        local_target, credentials, channel_credentials=grpc.local_channel_credentials(LOCAL)
    )
    async with channel:
        answer = await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
    assert answer.subject == name
    assert list(answer.scopes) == ["audit.read"]


async def test_call_credentials_over_mutual_tls(tmp_path: Path) -> None:
    """PEM files in, a channel out: the token request and the call both go over mTLS."""
    pki = make_pki(tmp_path)
    settings = settings_for(
        tmp_path,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_file,
    )
    async with running_server(settings, pki.credentials()) as (app, _):
        client_id, secret, name = await account(app, "audit.read")
        credentials = ServiceAccountCredentials(client_id, secret)
        tls = tls_channel_credentials(pki.ca_file, pki.client_cert, pki.client_key)
        async with keyhold_channel(
            f"localhost:{app.port}", credentials, channel_credentials=tls
        ) as channel:
            answer = await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
        assert answer.subject == name
        assert credentials.requests == 1
        without_certificate = tls_channel_credentials(pki.ca_file)
        async with keyhold_channel(
            f"localhost:{app.port}",
            ServiceAccountCredentials(client_id, secret),
            channel_credentials=without_certificate,
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_wrong_client_secret_surfaces_as_unauthenticated(
    keyhold: tuple[KeyholdServer, str, str],
) -> None:
    app, target, _ = keyhold
    client_id, _, _ = await account(app)
    credentials = ServiceAccountCredentials(client_id, "khs_wrong")
    async with keyhold_channel(target, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
    assert rich_error(caught.value).reason == "INVALID_CLIENT"


async def test_verifier_checks_tokens_locally_and_refetches_keys_sparingly(
    keyhold: tuple[KeyholdServer, str, str],
) -> None:
    app, target, _ = keyhold
    user_token, user_name = await signed_in(app)
    async with grpc.aio.insecure_channel(target) as channel:
        verifier = TokenVerifier(channel, audience="keyhold", min_refetch_seconds=0.5)
        principal = await verifier.verify(user_token)
        assert principal.subject == user_name
        assert verifier.keys.fetches == 1
        stranger = ec.generate_private_key(ec.SECP256R1())
        now = int(time.time())
        claims = {
            "iss": "keyhold",
            "aud": "keyhold",
            "sub": "users/x",
            "sid": "s",
            "jti": "j",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }

        async def flood() -> None:  # tokens with unknown key ids
            for index in range(50):
                headers = {"kid": f"k{index}", "typ": "at+jwt"}
                forged = jwt.encode(claims, stranger, "ES256", headers)
                with pytest.raises(Unauthenticated) as caught:
                    await verifier.verify(forged)
                assert caught.value.reason == "TOKEN_KEY_UNKNOWN"

        await flood()
        assert verifier.keys.fetches == 1  # the keys were fetched under 0.5 s ago
        await asyncio.sleep(0.6)
        await flood()
        assert verifier.keys.fetches == 2  # one refetch for the interval, not fifty
        kid = jwt.get_unverified_header(user_token)["kid"]
        forged = jwt.encode(claims, stranger, "ES256", {"kid": kid, "typ": "at+jwt"})
        with pytest.raises(Unauthenticated) as caught:
            await verifier.verify(forged)
        assert caught.value.reason == "TOKEN_SIGNATURE_INVALID"


async def test_verifier_follows_a_key_rotation(keyhold: tuple[KeyholdServer, str, str]) -> None:
    app, target, _ = keyhold
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    async with grpc.aio.insecure_channel(target) as channel:
        verifier = TokenVerifier(channel, audience="keyhold", min_refetch_seconds=0)
        await verifier.verify(admin)
        stub = pb_grpc.IdentityServiceStub(channel)
        await stub.RotateSigningKey(
            pb.RotateSigningKeyRequest(), metadata=(("authorization", f"Bearer {admin}"),)
        )
        fresh = await stub.CreateSession(
            pb.CreateSessionRequest(
                email="admin@example.com", password="correct horse battery staple"
            )
        )
        principal = await verifier.verify(fresh.access_token)
        assert principal.roles == {"admin", "user"}


async def _echo_subject(request: bytes, context: Any) -> bytes:
    return current_principal().subject.encode()


REPORTS = Definition(
    "Reports",
    "reports.internal",
    {"reports.read": "read reports", "reports.write": "write reports"},
    {"reports:viewer": frozenset({"reports.read"})},
)


@pytest.fixture
async def downstream(
    keyhold: tuple[KeyholdServer, str, str],
) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    """A tiny downstream service, registered in Keyhold as the API resource `reports`,
    that accepts only tokens for its audience with `reports.read`."""
    app, target, _ = keyhold
    await app.identity.api_resources.create("reports", REPORTS)
    keyhold_connection = grpc.aio.insecure_channel(target)
    require = RequireKeyholdToken.for_audience(
        keyhold_connection, "reports.internal", {"reports.read"}
    )
    server = grpc.aio.server(interceptors=[require])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "demo.Reports", {"Get": grpc.unary_unary_rpc_method_handler(_echo_subject)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield app, channel
    finally:
        await channel.close()
        await server.stop(0)
        await keyhold_connection.close()


async def _granted(app: KeyholdServer, *scopes: str) -> tuple[str, str, str]:
    """A service account granted `scopes` of `reports`: client id, secret, name."""
    client_id, secret, name = await account(app)
    await app.identity.api_resources.grant_scopes(name, "api-resources/reports", list(scopes))
    return client_id, secret, name


async def _get(channel: grpc.aio.Channel, token: str | None) -> bytes:
    call = channel.unary_unary("/demo.Reports/Get")
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    result: bytes = await call(b"", metadata=metadata)
    return result


async def test_downstream_service_accepts_only_tokens_for_its_audience_and_scope(
    downstream: tuple[KeyholdServer, grpc.aio.Channel],
) -> None:
    app, channel = downstream
    client_id, secret, name = await _granted(app, "reports.read")
    issue = app.identity.service_accounts.issue_token
    granted = await issue(client_id, secret, [], "reports.internal")
    assert (granted.audience, granted.scopes) == ("reports.internal", {"reports.read"})
    assert await _get(channel, granted.token.token) == name.encode()
    # The same account's token for Keyhold itself is no token for reports.
    own = await issue(client_id, secret, [])
    other_id, other_secret, _ = await _granted(app, "reports.write")
    other = await issue(other_id, other_secret, [], "reports.internal")
    for token, code, reason in [
        (own.token.token, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_AUDIENCE_MISMATCH"),
        (other.token.token, grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED"),
        (None, grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING"),
        ("not-a-token", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
        (high_s_twin(granted.token.token), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_CANONICAL"),
        (granted.token.token + "==", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_CANONICAL"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _get(channel, token)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (code, reason)
