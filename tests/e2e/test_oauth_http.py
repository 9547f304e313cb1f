"""The standard OAuth 2.0 / OIDC endpoints over HTTP, beside gRPC: discovery, JWKS, the
token endpoint (client credentials by Basic, by form or by a signed assertion; refresh)
and introspection, driven with httpx and with Authlib's OAuth 2.0 client. Each endpoint
calls its gRPC twin's use case under the twin's policy: the same audit records, the
same refusals, in RFC 6749 / 6750 / 7662 form."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from cryptography.hazmat.primitives.asymmetric import ec

from keyhold.application.identity.api_resources import Definition
from keyhold.domain.audit.events import AuditFilter
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import PASSWORD, running_server, settings_for, signed_in
from tests.support.status import rich_error


@dataclass
class Http:
    app: KeyholdServer
    base: str
    client_id: str
    secret: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=10.0)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Http]:
    settings = settings_for(tmp_path, http_address="127.0.0.1:0")
    async with running_server(settings) as (app, _):
        account, secret = await app.identity.service_accounts.create(
            "caller", ["audit.read", "identity.introspect"]
        )
        yield Http(app, f"http://127.0.0.1:{app.http_port}", account.client_id, secret)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"authorization": f"Basic {pair}"}


async def test_discovery_names_the_endpoints_and_the_keys_verify_a_token(http: Http) -> None:
    async with http.client() as client:
        discovery = (await client.get("/.well-known/openid-configuration")).json()
        assert discovery["token_endpoint"] == f"{http.base}/oauth2/token"
        assert set(discovery["grant_types_supported"]) >= {"client_credentials", "refresh_token"}
        assert "private_key_jwt" in discovery["token_endpoint_auth_methods_supported"]
        keys = await client.get(discovery["jwks_uri"])
        assert keys.headers["cache-control"] == "public, max-age=300"
        token = (
            await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers=_basic(http.client_id, http.secret),
            )
        ).json()
    jwk_set = jwt.PyJWKSet.from_dict(keys.json())
    kid = jwt.get_unverified_header(token["access_token"])["kid"]
    claims = jwt.decode(
        token["access_token"], jwk_set[kid].key, algorithms=["ES256"], audience="keyhold"
    )
    assert claims["scope"] == "audit.read identity.introspect"
    assert (token["token_type"], token["scope"]) == ("Bearer", "audit.read identity.introspect")
    assert 0 < token["expires_in"] <= 900


async def test_every_client_authentication_method_gets_a_token(http: Http) -> None:
    app = http.app
    account, _ = await app.identity.service_accounts.create("keyless", ["audit.read"])
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    await app.identity.account_keys.add(
        account.name, json.dumps({**jwk, "kid": "k1", "alg": "ES256"})
    )
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": account.client_id,
            "sub": account.client_id,
            "aud": "keyhold",
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        },
        key,
        "ES256",
        {"kid": "k1"},
    )
    async with http.client() as client:
        by_form = await client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": http.client_id,
                "client_secret": http.secret,
                "scope": "audit.read",
            },
        )
        by_assertion = await client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": account.client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
    assert by_form.status_code == 200, by_form.text
    assert by_form.json()["scope"] == "audit.read"
    assert by_assertion.status_code == 200, by_assertion.text
    assert by_form.headers["cache-control"] == "no-store"


async def test_a_token_for_another_service_names_its_audience(http: Http) -> None:
    resources = http.app.identity.api_resources
    account = await http.app.identity.service_accounts.create("fleet", [])
    await resources.create(
        "billing", Definition("Billing", "billing.internal", {"billing.read": ""}, {})
    )
    await resources.grant_scopes(account[0].name, "api-resources/billing", ["billing.read"])
    async with http.client() as client:
        answer = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "audience": "billing.internal"},
            headers=_basic(account[0].client_id, account[1]),
        )
        unknown = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "audience": "nowhere.internal"},
            headers=_basic(account[0].client_id, account[1]),
        )
        beyond = await client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "audience": "billing.internal",
                "scope": "billing.write",
            },
            headers=_basic(account[0].client_id, account[1]),
        )
    claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert (claims["aud"], answer.json()["scope"]) == ("billing.internal", "billing.read")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_target")
    assert (beyond.status_code, beyond.json()["error"]) == (400, "invalid_scope")


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, "wrong-secret", 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "khc_nobody", "client_secret": "x"},
            None,
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_secret": "x"},
            "basic",
            400,
            "invalid_request",
        ),
        (
            {"grant_type": "password", "username": "a", "password": "b"},
            None,
            400,
            "unsupported_grant_type",
        ),
        ({}, None, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, None, 400, "invalid_request"),
        (
            {"grant_type": "refresh_token", "refresh_token": "khr_unknown"},
            None,
            400,
            "invalid_grant",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:other",
                "client_assertion": "x",
            },
            None,
            400,
            "invalid_request",
        ),
    ],
)
async def test_the_token_endpoint_answers_bad_requests_as_rfc_6749_says(
    http: Http, data: dict[str, str], headers: str | None, status: int, error: str
) -> None:
    sent = {
        "wrong-secret": _basic(http.client_id, "khs_wrong"),
        "basic": _basic(http.client_id, http.secret),
        None: {},
    }[headers]
    async with http.client() as client:
        answer = await client.post("/oauth2/token", data=data, headers=sent)
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    if headers == "wrong-secret":
        assert answer.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (
            b"grant_type=client_credentials&grant_type=refresh_token",
            "application/x-www-form-urlencoded",
        ),
        (b"grant_type=" + b"x" * 70_000, "application/x-www-form-urlencoded"),
        (b"grant_type=\xff\xfe", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_body_that_is_not_one_form_is_refused(
    http: Http, content: bytes, content_type: str
) -> None:
    async with http.client() as client:
        answer = await client.post(
            "/oauth2/token", content=content, headers={"content-type": content_type}
        )
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


async def test_a_refresh_token_is_rotated_and_its_reuse_refused(http: Http) -> None:
    await signed_in(http.app, "ada@example.com")
    login = await http.app.identity.sessions.login("ada@example.com", PASSWORD, "t")
    async with http.client() as client:
        first = await client.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": login.refresh_token},
        )
        rotated = first.json()["refresh_token"]
        await client.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": rotated}
        )
        reused = await client.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": login.refresh_token},
        )
    assert first.status_code == 200
    assert rotated != login.refresh_token
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert reused.json()["error_reason"] == "REFRESH_TOKEN_REUSED"


async def test_introspection_by_bearer_token_or_client_credentials(http: Http) -> None:
    token, _ = await signed_in(http.app, "ada@example.com")
    async with http.client() as client:
        issued = (
            await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers=_basic(http.client_id, http.secret),
            )
        ).json()["access_token"]
        by_bearer = await client.post(
            "/oauth2/introspect",
            data={"token": token},
            headers={"authorization": f"Bearer {issued}"},
        )
        by_basic = await client.post(
            "/oauth2/introspect", data={"token": token}, headers=_basic(http.client_id, http.secret)
        )
        inactive = await client.post(
            "/oauth2/introspect",
            data={"token": "nonsense"},
            headers=_basic(http.client_id, http.secret),
        )
        anonymous = await client.post("/oauth2/introspect", data={"token": token})
        wrong = await client.post(
            "/oauth2/introspect", data={"token": token}, headers=_basic(http.client_id, "khs_wrong")
        )
        lacking_scope = await client.post(
            "/oauth2/introspect",
            data={"token": token},
            headers={"authorization": f"Bearer {token}"},
        )
    user = jwt.decode(token, options={"verify_signature": False})
    for answer in (by_bearer, by_basic):
        body = answer.json()
        assert (body["active"], body["sub"], body["aud"]) == (True, user["sub"], "keyhold")
    assert inactive.json() == {"active": False}
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "invalid_token")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert (lacking_scope.status_code, lacking_scope.json()["error"]) == (403, "insufficient_scope")


async def test_a_token_over_http_is_audited_as_over_grpc(http: Http) -> None:
    async with http.client() as client:
        await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={**_basic(http.client_id, http.secret), "x-request-id": "http-call-1"},
        )
    events = await http.app.audit.trail.newest_first(
        AuditFilter(action="identity.service_token.create"), None, 10
    )
    outcomes = [e.record for e in events if e.record.outcome.value == "succeeded"]
    assert outcomes
    assert outcomes[0].request_id == "http-call-1"
    assert outcomes[0].peer.startswith("ipv4:127.0.0.1:")


async def test_a_standard_oauth_client_gets_a_token_and_introspects(http: Http) -> None:
    async with AsyncOAuth2Client(
        http.client_id, http.secret, token_endpoint_auth_method="client_secret_basic"
    ) as oauth:
        token = await oauth.fetch_token(
            f"{http.base}/oauth2/token", grant_type="client_credentials", scope="audit.read"
        )
        seen = await oauth.introspect_token(
            f"{http.base}/oauth2/introspect", token=token["access_token"]
        )
    assert token["scope"] == "audit.read"
    assert seen.json()["active"] is True


async def test_health_endpoints(http: Http) -> None:
    async with http.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz", headers={"x-request-id": "probe-1"})
        fresh = await client.get("/readyz")
    assert ready.status_code == 200
    # Every answer carries a request id: the caller's, or one of the server's making.
    assert ready.headers["x-request-id"] == "probe-1"
    assert len(fresh.headers["x-request-id"]) >= 16


EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


async def test_a_service_exchanges_a_users_token_at_the_token_endpoint(http: Http) -> None:
    app = http.app
    resources = app.identity.api_resources
    await resources.create(
        "reports",
        Definition(
            "Reports",
            "reports.internal",
            {"reports.read": ""},
            {"reports:viewer": frozenset({"reports.read"})},
        ),
    )
    user_token, user = await signed_in(app, "ada@example.com")
    await resources.grant_roles(user, "api-resources/reports", ["reports:viewer"])
    front, secret = await app.identity.service_accounts.create("front", [])
    await resources.set_exchange_grant(front.name, "api-resources/reports", ["reports.read"])
    form = {
        "grant_type": EXCHANGE,
        "subject_token": user_token,
        "subject_token_type": ACCESS_TOKEN,
        "audience": "reports.internal",
    }
    async with http.client() as client:
        answer = await client.post(
            "/oauth2/token", data=form, headers=_basic(front.client_id, secret)
        )
        stranger = await client.post(
            "/oauth2/token", data=form, headers=_basic(http.client_id, http.secret)
        )
        garbage = await client.post(
            "/oauth2/token",
            data={**form, "subject_token": "not-a-token"},
            headers=_basic(front.client_id, secret),
        )
        wrong_type = await client.post(
            "/oauth2/token",
            data={**form, "subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            headers=_basic(front.client_id, secret),
        )
    body = answer.json()
    assert answer.status_code == 200, answer.text
    assert (body["issued_token_type"], body["scope"], body["audience"]) == (
        ACCESS_TOKEN,
        "reports.read",
        "reports.internal",
    )
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["act"]) == (user, {"sub": front.name})
    assert (stranger.status_code, stranger.json()["error"]) == (400, "unauthorized_client")
    assert (garbage.status_code, garbage.json()["error"]) == (400, "invalid_request")
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (400, "invalid_request")


async def test_the_token_endpoint_counts_against_create_service_tokens_limits(
    http: Http,
) -> None:
    """CreateServiceToken's policy: 120 a minute per client id, whatever the transport."""
    wrong = _basic(http.client_id, "khs_wrong")
    async with http.client() as client:
        for _ in range(120):
            answer = await client.post(
                "/oauth2/token", data={"grant_type": "client_credentials"}, headers=wrong
            )
            assert answer.status_code == 401
        limited = await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, headers=wrong
        )
    assert (limited.status_code, limited.json()["error"]) == (429, "slow_down")
    assert int(limited.headers["retry-after"]) >= 1
    async with grpc.aio.insecure_channel(f"127.0.0.1:{http.app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(
                pb.CreateServiceTokenRequest(client_id=http.client_id, client_secret=http.secret)
            )
    assert rich_error(caught.value).code is grpc.StatusCode.RESOURCE_EXHAUSTED
