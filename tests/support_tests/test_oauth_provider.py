"""The OAuth 2.0 stand-in, driven over real HTTP with httpx as Keyhold drives it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.support.oauth_provider import FakeOAuthProvider, new_pkce_pair, s256

REDIRECT_URI = "https://keyhold.test/oauth/callback"
SECRET = "provider-secret"


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider(scopes_supported=["read", "write", "admin"]) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        yield client


def authorization_url(
    provider: FakeOAuthProvider,
    challenge: str,
    *,
    state: str | None = "state-123",
    scope: str | None = "read write",
    **overrides: str | None,
) -> str:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": REDIRECT_URI,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "scope": scope,
        **overrides,
    }
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return f"{provider.authorization_endpoint}?{query}"


def consent(provider: FakeOAuthProvider, scope: str | None = "read write") -> tuple[str, str]:
    """Run the browser leg: (authorization code, code_verifier)."""
    verifier, challenge = new_pkce_pair()
    answer = provider.authorize(authorization_url(provider, challenge, scope=scope))
    assert answer["state"] == "state-123"
    return answer["code"], verifier


def code_form(code: str, verifier: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **extra,
    }


def post_auth(provider: FakeOAuthProvider) -> dict[str, str]:
    return {"client_id": provider.client_id, "client_secret": SECRET}


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


async def tokens(
    provider: FakeOAuthProvider, http: httpx.AsyncClient, scope: str | None = "read write"
) -> dict[str, Any]:
    code, verifier = consent(provider, scope)
    response = await http.post(
        provider.token_endpoint, data={**code_form(code, verifier), **post_auth(provider)}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(
    provider: FakeOAuthProvider, http: httpx.AsyncClient, refresh_token: str, **extra: str
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return await http.post(provider.token_endpoint, data={**form, **post_auth(provider)})


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_addresses_lifecycle_and_restart() -> None:
    provider = FakeOAuthProvider()
    with pytest.raises(RuntimeError):
        _ = provider.base_url
    provider.start()
    try:
        assert provider.base_url.startswith("http://127.0.0.1:")
        assert provider.authorization_endpoint == provider.base_url + "/authorize"
        assert provider.token_endpoint == provider.base_url + "/token"
        assert provider.revocation_endpoint == provider.base_url + "/revoke"
        with httpx.Client(timeout=2.0) as client:
            code, verifier = consent(provider)
            first = client.post(
                provider.token_endpoint, data={**code_form(code, verifier), **post_auth(provider)}
            ).json()
            url = provider.base_url
            provider.stop()
            assert not provider.running
            # The pooled keep-alive connection is cut too: a stopped provider answers nothing.
            with pytest.raises(httpx.TransportError):
                client.post(provider.token_endpoint, data=post_auth(provider))
            provider.start()
            assert provider.base_url == url
            assert provider.is_active(first["access_token"])
            again = client.post(
                provider.token_endpoint,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": first["refresh_token"],
                    **post_auth(provider),
                },
            )
            assert again.status_code == 200
    finally:
        provider.stop()


async def test_full_pkce_flow(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    verifier, challenge = new_pkce_pair()
    assert challenge == s256(verifier)
    url = authorization_url(provider, challenge, state="xyz", scope="read write")
    answer = provider.authorize(url)
    assert set(answer) == {"code", "state"}
    assert answer["state"] == "xyz"

    response = await http.post(
        provider.token_endpoint,
        data={**code_form(answer["code"], verifier), **post_auth(provider)},
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    assert provider.is_active(body["access_token"])
    assert provider.is_refresh_token_active(body["refresh_token"])
    assert provider.issued_access_tokens == [body["access_token"]]
    assert provider.issued_refresh_tokens == [body["refresh_token"]]

    recorded = provider.last_token_request
    assert recorded is not None
    assert recorded.form["grant_type"] == "authorization_code"
    assert recorded.form["code_verifier"] == verifier
    assert recorded.authorization is None
    assert provider.requests["token"] == 1
    assert provider.requests["authorize"] == 1
    assert provider.grants == {"authorization_code": 1}

    userinfo = await http.get(
        provider.base_url + "/userinfo",
        headers={"authorization": f"Bearer {body['access_token']}"},
    )
    assert userinfo.json() == {"sub": "fake-user", "scope": "read write"}


async def test_http_authorize_redirects_with_code(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    verifier, challenge = new_pkce_pair()
    response = await http.get(authorization_url(provider, challenge))
    assert response.status_code == 302
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(REDIRECT_URI + "?")
    assert location.params["state"] == "state-123"
    exchanged = await http.post(
        provider.token_endpoint,
        data={**code_form(location.params["code"], verifier), **post_auth(provider)},
    )
    assert exchanged.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"code_challenge_method": "plain"}, "S256"),
        ({"code_challenge_method": None}, "plain"),
        ({"code_challenge": None}, "no code_challenge"),
        ({"code_challenge": "short"}, "43-128"),
        ({"code_challenge": "a" * 64}, "BASE64URL"),
        ({"state": None}, "no state"),
        ({"redirect_uri": None}, "no redirect_uri"),
        ({"redirect_uri": "/relative"}, "absolute"),
        ({"client_id": "someone-else"}, "registered client"),
        ({"response_type": "token"}, "response_type"),
        ({"scope": "read  write"}, "scope"),
    ],
)
def test_authorize_refuses_a_bad_request(
    provider: FakeOAuthProvider, overrides: dict[str, str | None], message: str
) -> None:
    _, challenge = new_pkce_pair()
    with pytest.raises(AssertionError, match=message):
        provider.authorize(authorization_url(provider, challenge, **overrides))


def test_authorize_refuses_another_endpoint_and_denies_or_limits_scope(
    provider: FakeOAuthProvider,
) -> None:
    _, challenge = new_pkce_pair()
    url = authorization_url(provider, challenge)
    with pytest.raises(AssertionError, match="authorization endpoint"):
        provider.authorize(url.replace("/authorize", "/login"))
    with pytest.raises(AssertionError, match="repeats"):
        provider.authorize(url + "&state=again")
    assert provider.authorize(url, approve=False) == {
        "error": "access_denied",
        "state": "state-123",
    }
    assert provider.authorize(authorization_url(provider, challenge, scope="read delete")) == {
        "error": "invalid_scope",
        "state": "state-123",
    }


async def test_wrong_verifier_is_invalid_grant_and_burns_the_code(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    code, verifier = consent(provider)
    other_verifier, _ = new_pkce_pair()
    wrong = await http.post(
        provider.token_endpoint, data={**code_form(code, other_verifier), **post_auth(provider)}
    )
    assert_error(wrong, 400, "invalid_grant")
    retried = await http.post(
        provider.token_endpoint, data={**code_form(code, verifier), **post_auth(provider)}
    )
    assert_error(retried, 400, "invalid_grant")

    code, verifier = consent(provider)
    elsewhere = await http.post(
        provider.token_endpoint,
        data={
            **code_form(code, verifier, redirect_uri="https://evil.test/cb"),
            **post_auth(provider),
        },
    )
    assert_error(elsewhere, 400, "invalid_grant")
    assert provider.issued_access_tokens == []


async def test_code_reuse_is_invalid_grant_and_revokes_its_tokens(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    code, verifier = consent(provider)
    form = {**code_form(code, verifier), **post_auth(provider)}
    first = await http.post(provider.token_endpoint, data=form)
    assert first.status_code == 200
    access, refresh_token = first.json()["access_token"], first.json()["refresh_token"]
    reused = await http.post(provider.token_endpoint, data=form)
    assert_error(reused, 400, "invalid_grant")
    assert not provider.is_active(access)
    assert not provider.is_refresh_token_active(refresh_token)
    unknown = await http.post(
        provider.token_endpoint, data={**code_form("nope", verifier), **post_auth(provider)}
    )
    assert_error(unknown, 400, "invalid_grant")


async def test_expired_code_and_access_token(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    body = await tokens(provider, http)
    code, verifier = consent(provider)
    provider.advance_clock(61)
    late = await http.post(
        provider.token_endpoint, data={**code_form(code, verifier), **post_auth(provider)}
    )
    assert_error(late, 400, "invalid_grant")
    assert provider.is_active(body["access_token"])
    provider.advance_clock(3600)
    assert not provider.is_active(body["access_token"])


async def test_client_authentication(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    code, verifier = consent(provider)
    by_basic = await http.post(
        provider.token_endpoint,
        data=code_form(code, verifier),
        headers=basic(provider.client_id, SECRET),
    )
    assert by_basic.status_code == 200
    recorded = provider.last_token_request
    assert recorded is not None
    assert recorded.authorization is not None
    assert recorded.authorization.startswith("Basic ")
    assert "client_secret" not in recorded.form

    refresh_token = by_basic.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    for wrong in (
        ({**form, "client_id": provider.client_id, "client_secret": "nope"}, {}),
        (form, basic(provider.client_id, "nope")),
        (form, basic("someone-else", SECRET)),
        ({**form, "client_id": provider.client_id}, {}),
        (form, {}),
        (form, {"authorization": "Bearer abc"}),
    ):
        data, headers = wrong
        response = await http.post(provider.token_endpoint, data=data, headers=headers)
        assert_error(response, 401, "invalid_client")
        assert "www-authenticate" in response.headers
    both = await http.post(
        provider.token_endpoint,
        data={**form, "client_secret": SECRET},
        headers=basic(provider.client_id, SECRET),
    )
    assert_error(both, 400, "invalid_request")
    assert provider.is_refresh_token_active(refresh_token)


async def test_basic_credentials_are_form_urlencoded(http: httpx.AsyncClient) -> None:
    secret = "s3cr3t:with/odd chars+%"
    with FakeOAuthProvider(client_id="client id", client_secret=secret) as provider:
        code, verifier = consent(provider, scope=None)
        response = await http.post(
            provider.token_endpoint,
            data=code_form(code, verifier),
            headers=basic("client id", secret),
        )
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == ""


async def test_public_client(http: httpx.AsyncClient) -> None:
    with FakeOAuthProvider(client_secret=None, issue_refresh_tokens=False) as provider:
        code, verifier = consent(provider)
        with_secret = await http.post(
            provider.token_endpoint,
            data={
                **code_form(code, verifier),
                "client_id": provider.client_id,
                "client_secret": "x",
            },
        )
        assert_error(with_secret, 401, "invalid_client")
        code, verifier = consent(provider)
        response = await http.post(
            provider.token_endpoint,
            data={**code_form(code, verifier), "client_id": provider.client_id},
        )
        assert response.status_code == 200
        assert "refresh_token" not in response.json()


async def test_refresh_with_rotation(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    first = await tokens(provider, http)
    rotated = await refresh(provider, http, first["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "read write"
    assert not provider.is_refresh_token_active(first["refresh_token"])
    assert_error(await refresh(provider, http, first["refresh_token"]), 400, "invalid_grant")

    narrower = await refresh(provider, http, second["refresh_token"], scope="read")
    assert narrower.status_code == 200
    assert narrower.json()["scope"] == "read"
    assert provider.token_scope(narrower.json()["refresh_token"]) == ("read", "write")
    wider = await refresh(provider, http, narrower.json()["refresh_token"], scope="read admin")
    assert_error(wider, 400, "invalid_scope")
    assert provider.grants == {"authorization_code": 1, "refresh_token": 4}
    assert len(provider.issued_refresh_tokens) == 3


async def test_refresh_without_rotation(http: httpx.AsyncClient) -> None:
    with FakeOAuthProvider(rotate_refresh_tokens=False) as provider:
        first = await tokens(provider, http)
        for _ in range(2):
            response = await refresh(provider, http, first["refresh_token"])
            assert response.status_code == 200
            assert "refresh_token" not in response.json()
        assert provider.is_refresh_token_active(first["refresh_token"])


async def test_invalid_grant_mode(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    body = await tokens(provider, http)
    provider.answer_invalid_grant_to_refresh()
    for _ in range(2):
        assert_error(await refresh(provider, http, body["refresh_token"]), 400, "invalid_grant")
    assert provider.is_refresh_token_active(body["refresh_token"])
    provider.reset_faults()
    assert (await refresh(provider, http, body["refresh_token"])).status_code == 200


async def test_malformed_token_requests(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    auth = post_auth(provider)
    url = provider.token_endpoint
    assert_error(
        await http.post(url, data={"grant_type": "password", **auth}), 400, "unsupported_grant_type"
    )
    assert_error(await http.post(url, data=auth), 400, "invalid_request")
    assert_error(
        await http.post(url, data={"grant_type": "authorization_code", "code": "c", **auth}),
        400,
        "invalid_request",
    )
    assert_error(
        await http.post(url, data={"grant_type": "refresh_token", **auth}), 400, "invalid_request"
    )
    assert_error(
        await http.post(url, json={"grant_type": "refresh_token", **auth}), 400, "invalid_request"
    )
    assert (await http.get(url)).status_code == 405
    assert (await http.get(provider.base_url + "/nowhere")).status_code == 404


async def test_fail_next_and_garbage(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    body = await tokens(provider, http)
    provider.fail_next("token", status=500, count=2)
    for _ in range(2):
        assert (await refresh(provider, http, body["refresh_token"])).status_code == 500
    provider.garbage("token")
    junk = await refresh(provider, http, body["refresh_token"])
    assert junk.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        junk.json()
    # None of the faulted requests reached the grant: the refresh token was never rotated.
    assert provider.is_refresh_token_active(body["refresh_token"])
    assert (await refresh(provider, http, body["refresh_token"])).status_code == 200

    provider.fail_next("revoke", status=503, error="temporarily_unavailable")
    revoked = await http.post(
        provider.revocation_endpoint, data={"token": body["access_token"], **post_auth(provider)}
    )
    assert_error(revoked, 503, "temporarily_unavailable")
    assert provider.is_active(body["access_token"])
    assert provider.requests["token"] == 5
    with pytest.raises(ValueError, match="unknown endpoint"):
        provider.fail_next("tokens")


async def test_answer_next_sends_a_custom_answer_without_side_effect(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    body = await tokens(provider, http)
    provider.answer_next("token", {"access_token": "x", "expires_in": float("nan")}, count=2)
    for _ in range(2):
        custom = await refresh(provider, http, body["refresh_token"])
        assert custom.status_code == 200
        assert b'"expires_in": NaN' in custom.content
    provider.answer_next("token", b'{"error": "\\u0007"}', status=400)
    assert (await refresh(provider, http, body["refresh_token"])).json() == {"error": "\x07"}
    assert provider.is_refresh_token_active(body["refresh_token"])  # never reached the grant
    assert (await refresh(provider, http, body["refresh_token"])).status_code == 200
    with pytest.raises(ValueError, match="not an HTTP status"):
        provider.answer_next("token", {}, status=99)


async def test_stall_times_the_client_out(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    code, verifier = consent(provider)
    form = {**code_form(code, verifier), **post_auth(provider)}
    provider.stall("token", seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(provider.token_endpoint, data=form, timeout=0.2)
    await asyncio.sleep(0.4)  # The stall ends; the client has hung up, so nothing happens.
    provider.stall("token", seconds=0)
    response = await http.post(provider.token_endpoint, data=form, timeout=1.0)
    assert response.status_code == 200  # The abandoned request did not consume the code.
    assert provider.requests["token"] == 2


async def test_stall_can_process_the_abandoned_request(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    """The response is lost on the way back: the code is consumed, a retry is a reuse."""
    code, verifier = consent(provider)
    form = {**code_form(code, verifier), **post_auth(provider)}
    provider.stall("token", seconds=0.3, process_if_abandoned=True)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(provider.token_endpoint, data=form, timeout=0.1)
    await asyncio.sleep(0.3)
    provider.stall("token", seconds=0)
    assert len(provider.issued_access_tokens) == 1
    assert_error(await http.post(provider.token_endpoint, data=form), 400, "invalid_grant")
    assert not provider.is_active(provider.issued_access_tokens[0])


async def test_stall_is_released_by_clearing_it(
    provider: FakeOAuthProvider, http: httpx.AsyncClient
) -> None:
    provider.stall("token", seconds=30)
    pending = asyncio.create_task(http.post(provider.token_endpoint, data={"grant_type": "x"}))
    await asyncio.sleep(0.1)
    assert not pending.done()
    provider.reset_faults()
    response = await asyncio.wait_for(pending, timeout=2)
    assert_error(response, 401, "invalid_client")


async def test_revocation(provider: FakeOAuthProvider, http: httpx.AsyncClient) -> None:
    first = await tokens(provider, http)
    second = await tokens(provider, http)
    url = provider.revocation_endpoint

    response = await http.post(
        url,
        data={"token": first["access_token"], "token_type_hint": "access_token"},
        headers=basic(provider.client_id, SECRET),
    )
    assert response.status_code == 200
    assert not provider.is_active(first["access_token"])
    assert provider.is_refresh_token_active(first["refresh_token"])

    # Revoking a refresh token takes the grant's access tokens along (RFC 7009 §2.1).
    response = await http.post(
        url,
        data={"token": second["refresh_token"], "token_type_hint": "access_token"},
        headers=basic(provider.client_id, SECRET),
    )
    assert response.status_code == 200
    assert not provider.is_refresh_token_active(second["refresh_token"])
    assert not provider.is_active(second["access_token"])
    assert_error(await refresh(provider, http, second["refresh_token"]), 400, "invalid_grant")

    unknown = await http.post(url, data={"token": "never-issued", **post_auth(provider)})
    assert unknown.status_code == 200
    wrong = await http.post(
        url, data={"token": first["refresh_token"], "client_id": provider.client_id}
    )
    assert_error(wrong, 401, "invalid_client")
    assert_error(await http.post(url, data=post_auth(provider)), 400, "invalid_request")
    assert provider.is_refresh_token_active(first["refresh_token"])

    recorded = provider.last_revoke_request
    assert recorded is not None
    assert recorded.form == {"client_id": provider.client_id, "client_secret": SECRET}
    assert provider.requests["revoke"] == 5
    assert provider.requests["token"] == 3

    assert provider.revoke_token(first["refresh_token"])
    assert not provider.revoke_token("never-issued")
    userinfo = await http.get(
        provider.base_url + "/userinfo", headers={"authorization": "Bearer nope"}
    )
    assert userinfo.status_code == 401
