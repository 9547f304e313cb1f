"""A stand-in OAuth 2.0 authorization server on loopback, for provider-connection tests.

`FakeOAuthProvider` is a real HTTP server (standard library, `ThreadingHTTPServer` on
127.0.0.1 in a daemon thread, so it does not care which asyncio loop, if any, the test runs)
that is as strict as a careful provider:

* the authorization endpoint is played by `authorize()`, the test's "browser": it validates
  the URL Keyhold built (RFC 6749 §4.1.1, RFC 7636 with S256 only) and raises
  `AssertionError` on anything a strict provider would refuse; a plain `GET /authorize` over
  HTTP does the same and answers with the 302 redirect;
* `POST /token` serves the `authorization_code` (with PKCE) and `refresh_token` grants, with
  client authentication by `client_secret_post` or HTTP Basic (RFC 6749 §2.3.1);
* `POST /revoke` is an RFC 7009 revocation endpoint; `GET /userinfo` takes a Bearer token.

Faults can be injected per endpoint ("authorize", "token", "revoke", "userinfo"), as can
answers of the test's own making (`answer_next`). A faulted or answered request has no side
effect: it never reaches the grant logic.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import select
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

__all__ = ["ENDPOINTS", "FakeOAuthProvider", "RecordedRequest", "new_pkce_pair", "s256"]

_log = logging.getLogger(__name__)

#: Endpoint names, as used by `requests` and by the fault-injection methods.
ENDPOINTS: Final = ("authorize", "token", "revoke", "userinfo")
_PATHS: Final = {f"/{name}": name for name in ENDPOINTS}
_OTHER: Final = "other"

_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_MAX_BODY: Final = 1 << 20
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_\-]{43}")
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_GARBAGE: Final = b"<html><body><h1>502 Bad Gateway</h1>upstream went away</body></html>\n"
_NO_STORE: Final = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the provider received it."""

    endpoint: str
    """"authorize", "token", "revoke", "userinfo", or "other" for an unknown path."""
    method: str
    path: str
    """The request target, query string included."""
    headers: Mapping[str, str]
    """Header names lower-cased (the last value wins if a header is repeated)."""
    form: Mapping[str, str]
    """The urlencoded body, first value of each field, blank values kept; {} if not a form."""
    authorization: str | None
    """The Authorization header, verbatim."""


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Form:
    params: dict[str, str]
    """Parameters with a value (RFC 6749 §3.2: a parameter without a value is omitted)."""
    raw: dict[str, str]
    duplicates: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class _AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: tuple[str, ...]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: tuple[str, ...]
    expires_at: float
    grant_id: int | None = None
    """The grant the code was exchanged for; None until then."""
    used: bool = False


@dataclass
class _AccessToken:
    grant_id: int
    scope: tuple[str, ...]
    expires_at: float
    revoked: bool = False


@dataclass
class _RefreshToken:
    grant_id: int
    scope: tuple[str, ...]
    revoked: bool = False


@dataclass
class _Faults:
    failures: deque[tuple[int, str | None]] = field(default_factory=deque)
    answers: deque[_Response] = field(default_factory=deque)
    garbage: int = 0
    stall_seconds: float = 0.0
    process_if_abandoned: bool = False


class FakeOAuthProvider:
    """An OAuth 2.0 authorization server on 127.0.0.1, driven from tests.

    Use as `with FakeOAuthProvider() as provider: ...` or with `start()` / `stop()`. After
    `stop()`, `start()` again rebinds the same port and keeps every code and token, so a test
    can take the provider down and bring it back.
    """

    def __init__(
        self,
        *,
        client_id: str = "keyhold-client",
        client_secret: str | None = "provider-secret",  # noqa: S107 - a fake's default
        access_token_lifetime: int = 3600,
        issue_refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = True,
        scopes_supported: Iterable[str] | None = None,
        authorization_code_lifetime: float = 60.0,
        subject: str = "fake-user",
    ) -> None:
        self.client_id: Final = client_id
        self.client_secret: Final = client_secret
        self.access_token_lifetime: Final = int(access_token_lifetime)
        self.issue_refresh_tokens: Final = issue_refresh_tokens
        self.rotate_refresh_tokens: Final = rotate_refresh_tokens
        self.scopes_supported: Final = None if scopes_supported is None else tuple(scopes_supported)
        self.authorization_code_lifetime: Final = authorization_code_lifetime
        self.subject: Final = subject

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._stopping = False
        self._clock_offset = 0.0

        self._codes: dict[str, _Code] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._grant_ids = itertools.count(1)
        self._issued_access: list[str] = []
        self._issued_refresh: list[str] = []

        self._requests: Counter[str] = Counter()
        self._grants: Counter[str] = Counter()
        self._history: list[RecordedRequest] = []
        self._last_token: RecordedRequest | None = None
        self._last_revoke: RecordedRequest | None = None

        self._faults: dict[str, _Faults] = {name: _Faults() for name in ENDPOINTS}
        self._stall_generation = 0
        self._invalid_grant_to_refresh = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeOAuthProvider is already running")
        server = _Server(("127.0.0.1", self._port), self)
        self._port = server.server_address[1]
        with self._lock:
            self._stopping = False
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-oauth-provider-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, kept-alive ones included."""
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeOAuthProvider has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.base_url}/userinfo"

    # -- the browser -----------------------------------------------------------------------

    def authorize(self, authorization_url: str, *, approve: bool = True) -> dict[str, str]:
        """Play the user's browser: open the URL Keyhold built and consent (or refuse).

        Raises `AssertionError` if the request is one a strict provider would refuse outright.
        Returns what the redirect to `redirect_uri` would carry: `{"code", "state"}`, or
        `{"error": "access_denied", "state"}` when `approve` is False, or
        `{"error": "invalid_scope", "state"}` for a scope outside `scopes_supported`.
        """
        if not self.running:
            raise RuntimeError("the provider is stopped: a browser could not reach it")
        self._record(
            RecordedRequest("authorize", "GET", authorization_url, {}, {}, None), form=None
        )
        request = self._validate_authorization_url(authorization_url)
        return self._consent(request, approve=approve)

    # -- inspection ------------------------------------------------------------------------

    def is_active(self, access_token: str) -> bool:
        """Whether the access token was issued here, is unexpired and is not revoked."""
        with self._lock:
            record = self._access_tokens.get(access_token)
            return record is not None and not record.revoked and self._now() < record.expires_at

    def is_refresh_token_active(self, refresh_token: str) -> bool:
        """Whether the refresh token was issued here and is neither revoked nor rotated out."""
        with self._lock:
            record = self._refresh_tokens.get(refresh_token)
            return record is not None and not record.revoked

    def token_scope(self, token: str) -> tuple[str, ...] | None:
        """The scope an access or refresh token carries, or None for an unknown token."""
        with self._lock:
            record = self._access_tokens.get(token) or self._refresh_tokens.get(token)
            return None if record is None else record.scope

    @property
    def requests(self) -> Counter[str]:
        """HTTP requests received per endpoint name (a snapshot); `authorize()` counts too."""
        with self._lock:
            return Counter(self._requests)

    @property
    def grants(self) -> Counter[str]:
        """`/token` requests per `grant_type` (a snapshot), whatever their outcome."""
        with self._lock:
            return Counter(self._grants)

    @property
    def history(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._history)

    @property
    def last_token_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._last_token

    @property
    def last_revoke_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._last_revoke

    @property
    def issued_access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued_access)

    @property
    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued_refresh)

    # -- provider-side actions -------------------------------------------------------------

    def revoke_token(self, token: str) -> bool:
        """Revoke as `/revoke` would (a refresh token takes its whole grant along).

        Returns whether the token was known.
        """
        with self._lock:
            return self._revoke(token)

    def revoke_all(self) -> None:
        """The user withdrew consent at the provider: every token stops working."""
        with self._lock:
            for record in self._all_tokens():
                record.revoked = True

    def advance_clock(self, seconds: float) -> None:
        """Move the provider's clock (code and access-token expiry) forward."""
        with self._lock:
            self._clock_offset += seconds

    # -- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        endpoint: str = "token",
        status: int = 500,
        count: int = 1,
        *,
        error: str | None = None,
    ) -> None:
        """Answer the next `count` requests to `endpoint` with `status`.

        The body is `{"error": error}` as JSON if `error` is given, plain text otherwise.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        self._check_endpoint(endpoint, count)
        with self._lock:
            self._faults[endpoint].failures.extend([(status, error)] * count)

    def stall(
        self, endpoint: str = "token", seconds: float = 5.0, *, process_if_abandoned: bool = False
    ) -> None:
        """Hold every request to `endpoint` for `seconds` before answering; 0 clears.

        Requests already held are released when the stall is changed or cleared. A request
        whose client hung up while held is dropped unprocessed (no code consumed, no token
        rotated) unless `process_if_abandoned`, which models a response lost on the way back.
        """
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._check_endpoint(endpoint, 1)
        with self._changed:
            faults = self._faults[endpoint]
            faults.stall_seconds = seconds
            faults.process_if_abandoned = process_if_abandoned
            self._stall_generation += 1
            self._changed.notify_all()

    def answer_next(
        self,
        endpoint: str = "token",
        body: Mapping[str, Any] | bytes = b"",
        *,
        status: int = 200,
        count: int = 1,
    ) -> None:
        """Answer the next `count` requests to `endpoint` with `status` and `body`: a mapping
        is sent as JSON (NaN and infinities as Python's `json` writes them), bytes as they are
        under Content-Type application/json. Like every fault, the request has no side effect.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        self._check_endpoint(endpoint, count)
        raw = body if isinstance(body, bytes) else json.dumps(dict(body)).encode()
        answer = _Response(status, raw, "application/json", _NO_STORE)
        with self._lock:
            self._faults[endpoint].answers.extend([answer] * count)

    def garbage(self, endpoint: str = "token", count: int = 1) -> None:
        """Answer the next `count` requests to `endpoint` with 200 and a body that is not JSON
        (though it claims to be: Content-Type application/json)."""
        self._check_endpoint(endpoint, count)
        with self._lock:
            self._faults[endpoint].garbage += count

    def answer_invalid_grant_to_refresh(self) -> None:
        """Answer every `refresh_token` grant with 400 invalid_grant until `reset_faults()`."""
        with self._lock:
            self._invalid_grant_to_refresh = True

    def reset_faults(self) -> None:
        with self._changed:
            self._faults = {name: _Faults() for name in ENDPOINTS}
            self._invalid_grant_to_refresh = False
            self._stall_generation += 1
            self._changed.notify_all()

    @staticmethod
    def _check_endpoint(endpoint: str, count: int) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if count < 1:
            raise ValueError("count must be at least 1")

    # -- request handling (called on the server's threads) ---------------------------------

    def _now(self) -> float:
        return time.monotonic() + self._clock_offset

    def _record(self, request: RecordedRequest, form: _Form | None) -> None:
        with self._lock:
            self._requests[request.endpoint] += 1
            self._history.append(request)
            if request.endpoint == "token":
                self._last_token = request
                grant_type = form.params.get("grant_type") if form else None
                if grant_type:
                    self._grants[grant_type] += 1
            elif request.endpoint == "revoke":
                self._last_revoke = request

    def _handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        client_gone: Callable[[], bool],
    ) -> _Response | None:
        """Answer one request; None means hang up without answering."""
        path = urlsplit(target).path
        endpoint = _PATHS.get(path, _OTHER)
        form = _parse_form(body) if _is_form(headers) else None
        self._record(
            RecordedRequest(
                endpoint,
                method,
                target,
                dict(headers),
                form.raw if form else {},
                headers.get("authorization"),
            ),
            form,
        )
        if endpoint == _OTHER:
            return _text(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        if not self._wait_out_stall(endpoint, client_gone):
            return None
        injected = self._take_fault(endpoint)
        if injected is not None:
            return injected
        if endpoint == "authorize":
            if method != "GET":
                return _method_not_allowed("GET")
            return self._http_authorize(target)
        if endpoint == "userinfo":
            if method != "GET":
                return _method_not_allowed("GET")
            return self._userinfo(headers)
        if method != "POST":
            return _method_not_allowed("POST")
        if form is None:
            return _oauth_error("invalid_request", f"Content-Type must be {_FORM_TYPE}")
        if form.error is not None:
            return _oauth_error("invalid_request", form.error)
        if form.duplicates:
            return _oauth_error(
                "invalid_request", f"parameters repeated: {', '.join(form.duplicates)}"
            )
        refused = self._authenticate_client(headers, form.params)
        if refused is not None:
            return refused
        if endpoint == "token":
            return self._token(form.params)
        return self._revocation(form.params)

    def _wait_out_stall(self, endpoint: str, client_gone: Callable[[], bool]) -> bool:
        """Hold the request while `endpoint` is stalled; False to hang up instead of answering."""
        with self._changed:
            faults = self._faults[endpoint]
            seconds = faults.stall_seconds
            if seconds <= 0:
                return not self._stopping
            process_if_abandoned = faults.process_if_abandoned
            generation = self._stall_generation
            deadline = time.monotonic() + seconds
            while not self._stopping and generation == self._stall_generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            if self._stopping:
                return False
        return process_if_abandoned or not client_gone()

    def _take_fault(self, endpoint: str) -> _Response | None:
        with self._lock:
            faults = self._faults[endpoint]
            if faults.answers:
                return faults.answers.popleft()
            if faults.failures:
                status, error = faults.failures.popleft()
                if error is None:
                    return _text(status, f"injected failure: HTTP {status}")
                return _json(status, {"error": error})
            if faults.garbage:
                faults.garbage -= 1
                return _Response(HTTPStatus.OK, _GARBAGE, "application/json")
        return None

    def _authenticate_client(
        self, headers: Mapping[str, str], form: Mapping[str, str]
    ) -> _Response | None:
        """RFC 6749 §2.3.1: HTTP Basic or client_secret_post, never both."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() != "basic":
                return _invalid_client(f"unsupported Authorization scheme {scheme!r}")
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _invalid_client("malformed HTTP Basic credentials")
            if ":" not in decoded:
                return _invalid_client("HTTP Basic credentials without a ':'")
            raw_id, _, raw_secret = decoded.partition(":")
            client_id: str | None = unquote_plus(raw_id)
            secret: str | None = unquote_plus(raw_secret)
            if "client_secret" in form:
                return _oauth_error(
                    "invalid_request",
                    "the client authenticated twice: HTTP Basic and client_secret in the form",
                )
            if "client_id" in form and form["client_id"] != client_id:
                return _invalid_client("client_id in the form differs from the HTTP Basic one")
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None:
            return _invalid_client("no client authentication")
        if not _equal(client_id, self.client_id):
            return _invalid_client(f"unknown client {client_id!r}")
        if self.client_secret is None:
            if secret:
                return _invalid_client("a public client has no secret")
        elif secret is None:
            return _invalid_client("missing client secret")
        elif not _equal(secret, self.client_secret):
            return _invalid_client("wrong client secret")
        return None

    def _token(self, form: Mapping[str, str]) -> _Response:
        grant_type = form.get("grant_type")
        if grant_type is None:
            return _oauth_error("invalid_request", "missing grant_type")
        if grant_type == "authorization_code":
            return self._authorization_code_grant(form)
        if grant_type == "refresh_token":
            return self._refresh_token_grant(form)
        return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r}")

    def _authorization_code_grant(self, form: Mapping[str, str]) -> _Response:
        missing = [name for name in ("code", "redirect_uri", "code_verifier") if name not in form]
        if missing:
            return _oauth_error("invalid_request", f"missing {', '.join(missing)}")
        with self._lock:
            code = self._codes.get(form["code"])
            if code is None:
                return _oauth_error("invalid_grant", "unknown authorization code")
            if code.used:
                if code.grant_id is not None:
                    self._revoke_grant(code.grant_id)
                return _oauth_error(
                    "invalid_grant",
                    "authorization code already used; the tokens issued for it are revoked",
                )
            # Whatever happens next, a code is good for one attempt only.
            code.used = True
            if self._now() >= code.expires_at:
                return _oauth_error("invalid_grant", "authorization code expired")
            if form["redirect_uri"] != code.redirect_uri:
                return _oauth_error(
                    "invalid_grant", "redirect_uri differs from the authorization request's"
                )
            verifier = form["code_verifier"]
            if not _UNRESERVED.fullmatch(verifier):
                return _oauth_error(
                    "invalid_grant", "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]"
                )
            if not _equal(s256(verifier), code.code_challenge):
                return _oauth_error("invalid_grant", "code_verifier does not match code_challenge")
            code.grant_id = next(self._grant_ids)
            return _json(
                HTTPStatus.OK,
                self._issue(code.grant_id, code.scope, refresh_scope=code.scope),
                _NO_STORE,
            )

    def _refresh_token_grant(self, form: Mapping[str, str]) -> _Response:
        if "refresh_token" not in form:
            return _oauth_error("invalid_request", "missing refresh_token")
        requested = form.get("scope")
        with self._lock:
            if self._invalid_grant_to_refresh:
                return _oauth_error("invalid_grant", "refresh token rejected (injected fault)")
            record = self._refresh_tokens.get(form["refresh_token"])
            if record is None or record.revoked:
                return _oauth_error("invalid_grant", "unknown, revoked or rotated refresh token")
            scope = record.scope
            if requested is not None:
                asked = tuple(requested.split(" "))
                if not all(_SCOPE_TOKEN.fullmatch(token) for token in asked):
                    return _oauth_error("invalid_scope", f"malformed scope {requested!r}")
                beyond = [token for token in asked if token not in record.scope]
                if beyond:
                    return _oauth_error(
                        "invalid_scope", f"scope beyond the original grant: {' '.join(beyond)}"
                    )
                scope = asked
            if self.rotate_refresh_tokens:
                record.revoked = True
            refresh_scope = record.scope if self.rotate_refresh_tokens else None
            return _json(
                HTTPStatus.OK, self._issue(record.grant_id, scope, refresh_scope), _NO_STORE
            )

    def _issue(
        self, grant_id: int, scope: tuple[str, ...], refresh_scope: tuple[str, ...] | None
    ) -> dict[str, Any]:
        """Mint an access token, and a refresh token with `refresh_scope` if there is one."""
        access = f"at-{secrets.token_urlsafe(24)}"
        self._access_tokens[access] = _AccessToken(
            grant_id, scope, self._now() + self.access_token_lifetime
        )
        self._issued_access.append(access)
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }
        if self.issue_refresh_tokens and refresh_scope is not None:
            refresh = f"rt-{secrets.token_urlsafe(32)}"
            self._refresh_tokens[refresh] = _RefreshToken(grant_id, refresh_scope)
            self._issued_refresh.append(refresh)
            answer["refresh_token"] = refresh
        answer["scope"] = " ".join(scope)
        return answer

    def _revocation(self, form: Mapping[str, str]) -> _Response:
        token = form.get("token")
        if token is None:
            return _oauth_error("invalid_request", "missing token")
        # token_type_hint only says where to look first (RFC 7009 §2.1): both kinds are searched.
        with self._lock:
            self._revoke(token)
        # RFC 7009 §2.2: 200 whether or not the token was known.
        return _Response(HTTPStatus.OK, headers=_NO_STORE)

    def _revoke(self, token: str) -> bool:
        access = self._access_tokens.get(token)
        refresh = self._refresh_tokens.get(token)
        if refresh is not None:
            # RFC 7009 §2.1: revoking a refresh token invalidates the grant's access tokens.
            self._revoke_grant(refresh.grant_id)
            return True
        if access is not None:
            access.revoked = True
            return True
        return False

    def _revoke_grant(self, grant_id: int) -> None:
        for record in self._all_tokens():
            if record.grant_id == grant_id:
                record.revoked = True

    def _all_tokens(self) -> list[_AccessToken | _RefreshToken]:
        return [*self._access_tokens.values(), *self._refresh_tokens.values()]

    def _userinfo(self, headers: Mapping[str, str]) -> _Response:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not self.is_active(token.strip()):
            return _Response(
                HTTPStatus.UNAUTHORIZED,
                headers=(("WWW-Authenticate", 'Bearer error="invalid_token"'),),
            )
        return _json(
            HTTPStatus.OK,
            {"sub": self.subject, "scope": " ".join(self.token_scope(token.strip()) or ())},
        )

    def _http_authorize(self, target: str) -> _Response:
        try:
            request = self._validate_authorization_url(self.base_url + target)
        except AssertionError as refused:
            return _text(HTTPStatus.BAD_REQUEST, str(refused))
        answer = self._consent(request, approve=True)
        separator = "&" if urlsplit(request.redirect_uri).query else "?"
        location = request.redirect_uri + separator + urlencode(answer)
        return _Response(HTTPStatus.FOUND, headers=(("Location", location),))

    def _consent(self, request: _AuthorizationRequest, *, approve: bool) -> dict[str, str]:
        if not approve:
            return {"error": "access_denied", "state": request.state}
        if self.scopes_supported is not None and any(
            token not in self.scopes_supported for token in request.scope
        ):
            return {"error": "invalid_scope", "state": request.state}
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(
                request.client_id,
                request.redirect_uri,
                request.code_challenge,
                request.scope,
                self._now() + self.authorization_code_lifetime,
            )
        return {"code": code, "state": request.state}

    def _validate_authorization_url(self, url: str) -> _AuthorizationRequest:
        """RFC 6749 §3.1 and §4.1.1, RFC 7636 §4.3 with S256 required."""
        parts = urlsplit(url)
        expected = urlsplit(self.authorization_endpoint)
        if (parts.scheme, parts.netloc, parts.path) != (
            expected.scheme,
            expected.netloc,
            expected.path,
        ):
            raise AssertionError(
                f"authorization URL {url!r} is not this provider's authorization endpoint "
                f"{self.authorization_endpoint!r}"
            )
        if parts.fragment:
            raise AssertionError(f"authorization URL {url!r} must not have a fragment")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        repeated = sorted(
            {name for name, count in Counter(n for n, _ in pairs).items() if count > 1}
        )
        if repeated:
            raise AssertionError(f"authorization request repeats parameters: {repeated}")
        params = {name: value for name, value in pairs if value != ""}

        def required(name: str) -> str:
            if name not in params:
                raise AssertionError(f"authorization request has no {name} (URL {url!r})")
            return params[name]

        response_type = required("response_type")
        if response_type != "code":
            raise AssertionError(f"response_type must be 'code', not {response_type!r}")
        client_id = required("client_id")
        if client_id != self.client_id:
            raise AssertionError(
                f"client_id {client_id!r} is not the registered client {self.client_id!r}"
            )
        redirect_uri = required("redirect_uri")
        redirect = urlsplit(redirect_uri)
        if not redirect.scheme or redirect.fragment:
            raise AssertionError(
                f"redirect_uri {redirect_uri!r} must be an absolute URI without a fragment"
            )
        state = required("state")
        method = params.get("code_challenge_method")
        if method != "S256":
            raise AssertionError(
                "code_challenge_method must be 'S256' "
                + (
                    "(absent means 'plain', which is refused)"
                    if method is None
                    else f"not {method!r}"
                )
            )
        challenge = required("code_challenge")
        if not _UNRESERVED.fullmatch(challenge):
            raise AssertionError(
                f"code_challenge {challenge!r} must be 43-128 characters of [A-Za-z0-9-._~]"
            )
        if not _S256_CHALLENGE.fullmatch(challenge):
            raise AssertionError(
                f"code_challenge {challenge!r} is not BASE64URL(SHA256(verifier)) without "
                "padding (43 characters of [A-Za-z0-9_-])"
            )
        scope: tuple[str, ...] = ()
        if "scope" in params:
            scope = tuple(params["scope"].split(" "))
            if not all(_SCOPE_TOKEN.fullmatch(token) for token in scope):
                raise AssertionError(
                    f"scope {params['scope']!r} must be scope tokens separated by single spaces"
                )
        return _AuthorizationRequest(client_id, redirect_uri, state, challenge, scope)


def new_pkce_pair() -> tuple[str, str]:
    """A fresh PKCE (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge for a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- HTTP plumbing ---------------------------------------------------------------------------


def _equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def _is_form(headers: Mapping[str, str]) -> bool:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == _FORM_TYPE


def _parse_form(body: bytes) -> _Form:
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeError:
        return _Form({}, {}, (), "the form body is not valid urlencoded UTF-8")
    raw: dict[str, str] = {}
    for name, value in pairs:
        raw.setdefault(name, value)
    counts = Counter(name for name, _ in pairs)
    duplicates = tuple(sorted(name for name, count in counts.items() if count > 1))
    params = {name: value for name, value in raw.items() if value != ""}
    return _Form(params, raw, duplicates)


def _json(
    status: int, payload: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, "application/json;charset=UTF-8", headers)


def _text(status: int, message: str) -> _Response:
    return _Response(status, message.encode() + b"\n", "text/plain; charset=utf-8")


def _oauth_error(error: str, description: str, status: int = HTTPStatus.BAD_REQUEST) -> _Response:
    return _json(status, {"error": error, "error_description": description}, _NO_STORE)


def _invalid_client(description: str) -> _Response:
    response = _oauth_error("invalid_client", description, HTTPStatus.UNAUTHORIZED)
    challenge = ("WWW-Authenticate", 'Basic realm="fake-oauth-provider"')
    return _Response(
        response.status, response.body, response.content_type, (*response.headers, challenge)
    )


def _method_not_allowed(allowed: str) -> _Response:
    response = _text(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")
    return _Response(response.status, response.body, response.content_type, (("Allow", allowed),))


def _client_gone(connection: socket.socket) -> bool:
    """Whether the peer has closed its end (an orderly FIN or a reset)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: FakeOAuthProvider) -> None:
        self.provider = provider
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exception(), ConnectionError):
            return  # The client hung up mid-request (a timeout, a reset): not our business.
        _log.exception("fake OAuth provider: error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body in one segment, sent at once: no Nagle / delayed-ACK 40 ms stalls.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("fake OAuth provider: " + format, *args)

    def _serve(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._answer(_text(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length"), close=True)
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._answer(_text(HTTPStatus.BAD_REQUEST, "bad Content-Length"), close=True)
            return
        try:
            body = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return
        try:
            response = self.server.provider._handle(
                self.command, self.path, headers, body, lambda: _client_gone(self.connection)
            )
        except Exception:
            _log.exception("fake OAuth provider: failed on %s %s", self.command, self.path)
            response = _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "server_error"})
        if response is None:
            self.close_connection = True
            return
        self._answer(response)

    def _answer(self, response: _Response, *, close: bool = False) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.content_type is not None:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            # The client hung up (it timed out, most likely): nothing to answer.
            self.close_connection = True
