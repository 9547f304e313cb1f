"""The OAuth 2.0 / OIDC endpoints, each calling the use case its gRPC twin calls:

- `GET /.well-known/openid-configuration` (RFC 8414, OIDC Discovery);
- `GET /.well-known/jwks.json` (GetJwks);
- `POST /oauth2/token`: `client_credentials` (CreateServiceToken; client_secret_basic,
  client_secret_post or private_key_jwt) and `refresh_token` (RefreshSession);
- `POST /oauth2/introspect` (RFC 7662; IntrospectToken, by client credentials or a
  bearer token);
- `POST /oauth2/revoke` (RFC 7009; RevokeToken);
- `GET /healthz`, `GET /readyz`."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyhold.api.http.calls import (
    HttpAdmission,
    authorization_header,
    form_of,
    request_invalid,
)
from keyhold.api.http.oauth_errors import bearer_error, oauth_error, token_endpoint_error
from keyhold.api.pipeline.admission import Authenticate
from keyhold.api.servicers.identity import IdentityUseCases
from keyhold.application.identity.service_accounts import ServiceAccounts
from keyhold.domain.errors import DomainError, FieldViolation, InvalidArgument
from keyhold.domain.principal import Principal
from keyhold.identity.v1 import identity_service_pb2 as pb

IDENTITY = "/keyhold.identity.v1.IdentityService/"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
GRANT_TYPES = ("client_credentials", "refresh_token", TOKEN_EXCHANGE)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
# Verifiers fetch the set again for a key id they do not know (a rotated key signs at
# once), so a short max-age costs little and bounds how long a removed key is trusted.
JWKS_MAX_AGE_SECONDS = 300
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}

Ready = Callable[[], bool]


class OAuthEndpoints:
    def __init__(
        self,
        use_cases: IdentityUseCases,
        admission: HttpAdmission,
        *,
        issuer: str,
        ready: Ready,
    ) -> None:
        """`issuer`: Keyhold's issuer; when it is an http(s) URL, the endpoints are
        published under it, otherwise under the URL each request came to."""
        self._uc = use_cases
        self._admission = admission
        self._issuer = issuer
        self._ready = ready

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", self.discovery, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/oauth2/token", self.token, methods=["POST"]),
            Route("/oauth2/introspect", self.introspect, methods=["POST"]),
            Route("/oauth2/revoke", self.revoke, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]

    def _base(self, request: Request) -> str:
        if self._issuer.startswith(("https://", "http://")):
            return self._issuer.rstrip("/")
        return str(request.base_url).rstrip("/")

    async def discovery(self, request: Request) -> Response:
        base = self._base(request)
        return JSONResponse(
            {
                "issuer": base if self._issuer.startswith("http") else self._issuer,
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "token_endpoint": f"{base}/oauth2/token",
                "introspection_endpoint": f"{base}/oauth2/introspect",
                "revocation_endpoint": f"{base}/oauth2/revoke",
                "revocation_endpoint_auth_methods_supported": ["none"],
                "grant_types_supported": list(GRANT_TYPES),
                "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
                "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
                "introspection_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "scopes_supported": [],
            },
            headers={"cache-control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
        )

    async def jwks(self, request: Request) -> Response:
        try:
            await self._admission.admit(IDENTITY + "GetJwks", request, pb.GetJwksRequest())
            keys = await self._uc.published_keys.current()
        except DomainError as error:
            return bearer_error(error)
        return Response(
            json.dumps({"keys": [key.public_jwk for key in keys]}, sort_keys=True),
            media_type="application/jwk-set+json",
            headers={"cache-control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
        )

    async def token(self, request: Request) -> Response:
        basic_used = False
        try:
            form = await form_of(request)
            grant_type = form.get("grant_type", "")
            if grant_type == "client_credentials":
                client = _client_credentials(request, form)
                basic_used = client.basic
                return await self._client_credentials(request, form, client)
            if grant_type == "refresh_token":
                return await self._refresh(request, form)
            if grant_type == TOKEN_EXCHANGE:
                client = _client_credentials(request, form)
                basic_used = client.basic
                return await self._exchange(request, form, client)
        except DomainError as error:
            return token_endpoint_error(error, basic_auth_used=basic_used)
        if not grant_type:
            return oauth_error(400, "invalid_request", "grant_type is required")
        return oauth_error(400, "unsupported_grant_type", f"supported: {', '.join(GRANT_TYPES)}")

    async def _client_credentials(
        self, request: Request, form: dict[str, str], client: _Client
    ) -> Response:
        message = pb.CreateServiceTokenRequest(
            client_id=client.client_id,
            client_secret=client.secret,
            client_assertion=client.assertion,
            scopes=form.get("scope", "").split(),
            audience=form.get("audience", "") or form.get("resource", ""),
        )
        await self._admission.admit(IDENTITY + "CreateServiceToken", request, message)
        issued = await self._uc.service_accounts.issue_token(
            message.client_id,
            message.client_secret,
            list(message.scopes),
            message.audience,
            message.client_assertion,
        )
        return _token_response(
            issued.token.token, issued.token.expires_at, issued.scopes, audience=issued.audience
        )

    async def _exchange(self, request: Request, form: dict[str, str], client: _Client) -> Response:
        """RFC 8693: the calling service (the authenticated client) exchanges a user's
        access token for one to call `audience` (or `resource`) on the user's behalf."""
        for name in ("subject_token", "subject_token_type"):
            if not form.get(name):
                raise _missing(name)
        if form["subject_token_type"] != ACCESS_TOKEN_TYPE:
            raise request_invalid(
                "subject_token_type",
                f"subject_token_type must be {ACCESS_TOKEN_TYPE}",
                ACCESS_TOKEN_TYPE,
            )
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise request_invalid(
                "requested_token_type",
                f"requested_token_type can only be {ACCESS_TOKEN_TYPE}",
                ACCESS_TOKEN_TYPE,
            )
        message = pb.ExchangeTokenRequest(
            subject_token=form["subject_token"],
            audience=form.get("audience", "") or form.get("resource", ""),
            scopes=form.get("scope", "").split(),
        )
        await self._admission.admit(
            IDENTITY + "ExchangeToken",
            request,
            message,
            authenticate=client.proof(self._uc.service_accounts),
        )
        exchanged = await self._uc.token_exchange.exchange(
            message.subject_token, message.audience, list(message.scopes)
        )
        return _token_response(
            exchanged.token.token,
            exchanged.token.expires_at,
            exchanged.scopes,
            audience=exchanged.audience,
            issued_token_type=ACCESS_TOKEN_TYPE,
        )

    async def _refresh(self, request: Request, form: dict[str, str]) -> Response:
        message = pb.RefreshSessionRequest(refresh_token=form.get("refresh_token", ""))
        if not message.refresh_token:
            raise _missing("refresh_token")
        await self._admission.admit(IDENTITY + "RefreshSession", request, message)
        result = await self._uc.sessions.refresh(message.refresh_token)
        token = result.access_token
        return _token_response(
            token.token, token.expires_at, frozenset(), refresh_token=result.refresh_token
        )

    async def introspect(self, request: Request) -> Response:
        """RFC 7662: the caller authenticates as a client (Basic, or client_secret_post),
        or with a bearer token; either way it needs the scope `identity.introspect`, as
        IntrospectToken does."""
        basic_used = False
        try:
            form = await form_of(request)
            message = pb.IntrospectTokenRequest(token=form.get("token", ""))
            header = authorization_header(request)
            authenticate = None
            if "client_secret" in form or (
                isinstance(header, str) and header.lower().startswith("basic ")
            ):
                client = _client_credentials(request, form)
                basic_used = client.basic
                authenticate = client.proof(self._uc.service_accounts)
                header = None
            await self._admission.admit(
                IDENTITY + "IntrospectToken", request, message, header, authenticate
            )
            principal = await self._uc.introspection.introspect(message.token)
        except DomainError as error:
            if basic_used or error.reason == "INVALID_CLIENT":
                return token_endpoint_error(error, basic_auth_used=basic_used)
            return bearer_error(error)
        return JSONResponse(_introspection(principal), headers=_NO_STORE)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: 200 for any token but a service account's (its type is not
        revocable: `unsupported_token_type`). The token is the credential."""
        try:
            form = await form_of(request)
            message = pb.RevokeTokenRequest(
                token=form.get("token", ""), token_type_hint=form.get("token_type_hint", "")
            )
            if not message.token:
                raise _missing("token")
            await self._admission.admit(IDENTITY + "RevokeToken", request, message)
            await self._uc.token_revocation.revoke(message.token)
        except DomainError as error:
            if error.reason == "TOKEN_TYPE_UNSUPPORTED":
                return oauth_error(
                    400, "unsupported_token_type", error.message, reason=error.reason
                )
            return token_endpoint_error(error, basic_auth_used=False)
        return Response(status_code=200, headers=_NO_STORE)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self._ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)


@dataclass(frozen=True, slots=True)
class _Client:
    client_id: str
    secret: str
    assertion: str
    basic: bool  # authenticated by HTTP Basic (a refusal then challenges it)

    def proof(self, accounts: ServiceAccounts) -> Authenticate:
        """The caller proven as its account, for an endpoint whose gRPC twin takes the
        account's bearer token."""
        return partial(accounts.authenticated, self.client_id, self.secret, self.assertion)


def _client_credentials(request: Request, form: dict[str, str]) -> _Client:
    """The client's one way of authenticating (RFC 6749 §2.3: never two at once)."""
    header = authorization_header(request)
    assertion_type = form.get("client_assertion_type", "")
    methods = sum((isinstance(header, str), "client_secret" in form, bool(assertion_type)))
    if methods > 1 or not isinstance(header, str | None):
        raise InvalidArgument(
            "CLIENT_CREDENTIALS_AMBIGUOUS",
            "authenticate the client one way only",
            [FieldViolation("authorization", "only one client authentication method")],
            domain="keyhold.identity",
        )
    if isinstance(header, str):
        client_id, secret = _basic(header)
        if form.get("client_id", client_id) != client_id:
            raise _missing("client_id")
        return _Client(client_id, secret, "", basic=True)
    if assertion_type:
        if assertion_type != JWT_BEARER_ASSERTION:
            raise request_invalid(
                "client_assertion_type",
                f"client_assertion_type must be {JWT_BEARER_ASSERTION}",
                JWT_BEARER_ASSERTION,
            )
        return _Client(form.get("client_id", ""), "", form.get("client_assertion", ""), basic=False)
    return _Client(form.get("client_id", ""), form.get("client_secret", ""), "", basic=False)


def _basic(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: Basic with the form-urlencoded client id and secret."""
    scheme, _, encoded = header.strip().partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise request_invalid(
            "authorization",
            "the client authenticates with HTTP Basic (RFC 6749 §2.3.1)",
            "Basic base64(client_id:client_secret)",
        ) from None
    client_id, _, secret = decoded.partition(":")
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _missing(field: str) -> InvalidArgument:
    return request_invalid(field, f"{field} is missing or does not match", "required")


def _token_response(
    token: str,
    expires_at: int,
    scopes: frozenset[str],
    *,
    audience: str = "",
    refresh_token: str = "",
    issued_token_type: str = "",
) -> Response:
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": max(0, expires_at - int(time.time())),
    }
    if scopes:
        body["scope"] = " ".join(sorted(scopes))
    if audience:
        body["audience"] = audience
    if refresh_token:
        body["refresh_token"] = refresh_token
    if issued_token_type:
        body["issued_token_type"] = issued_token_type
    return JSONResponse(body, headers=_NO_STORE)


def _introspection(principal: Principal | None) -> dict[str, Any]:
    """RFC 7662 §2.2: `active`, and for an active token what it says."""
    if principal is None:
        return {"active": False}
    body: dict[str, Any] = {
        "active": True,
        "sub": principal.subject,
        "aud": principal.audience,
        "scope": " ".join(sorted(principal.scopes)),
        "exp": principal.expires_at,
        "token_type": "Bearer",
    }
    if principal.issued_at is not None:
        body["iat"] = principal.issued_at
    if principal.token_id:
        body["jti"] = principal.token_id
    if principal.roles:
        body["roles"] = sorted(principal.roles)
    if principal.session_id:
        body["sid"] = principal.session_id
    if principal.actor_chain:
        body["act"] = _act(principal.actor_chain)
    return body


def _act(chain: tuple[str, ...]) -> dict[str, Any]:
    """RFC 8693 §4.1: the most recent actor (the chain's first) outermost."""
    act: dict[str, Any] = {"sub": chain[0]}
    if len(chain) > 1:
        act["act"] = _act(chain[1:])
    return act
