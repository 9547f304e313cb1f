"""Refusals as RFC 6749 §5.2 error responses (and RFC 6750 §3 for bearer tokens): the
`error` code a standard client acts on, the status it expects, and the ErrorInfo
reason kept as `error_reason` for people and logs."""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from keyhold.domain.errors import (
    DomainError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
# How the client-credentials grant says the client did not prove itself.
_CLIENT_REFUSALS = frozenset(
    {
        "INVALID_CLIENT",
        "SECRETS_REFUSED",
        "KEY_UNKNOWN",
        "ISSUER_UNTRUSTED",
        "WORKLOAD_UNMAPPED",
    }
)
_GRANT_REFUSALS = ("REFRESH_", "SESSION_", "ACCOUNT_")
_SCOPE_REFUSALS = frozenset({"SCOPE_NOT_GRANTED", "SCOPE_UNKNOWN", "SCOPES_INVALID"})
_TARGET_REFUSALS = frozenset({"AUDIENCE_UNKNOWN"})


def oauth_error(
    status: int,
    error: str,
    description: str,
    *,
    reason: str = "",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": error, "error_description": description}
    if reason:
        body["error_reason"] = reason
    return JSONResponse(body, status_code=status, headers={**_NO_STORE, **(headers or {})})


def token_endpoint_error(error: DomainError, *, basic_auth_used: bool) -> JSONResponse:
    """The token endpoint's answer to a refusal (RFC 6749 §5.2, RFC 8693 §2.2.2)."""
    reason, message = error.reason, error.message
    if isinstance(error, ResourceExhausted):
        return _throttled(error)
    if isinstance(error, Unavailable):
        return oauth_error(503, "temporarily_unavailable", message, reason=reason)
    if reason in _SCOPE_REFUSALS:
        return oauth_error(400, "invalid_scope", message, reason=reason)
    if reason in _TARGET_REFUSALS:
        return oauth_error(400, "invalid_target", message, reason=reason)
    if isinstance(error, Unauthenticated) and (
        reason in _CLIENT_REFUSALS or reason.startswith("ASSERTION_")
    ):
        challenge = {"www-authenticate": 'Basic realm="keyhold"'} if basic_auth_used else {}
        return oauth_error(401, "invalid_client", message, reason=reason, headers=challenge)
    if reason.startswith(_GRANT_REFUSALS) or isinstance(error, Unauthenticated):
        return oauth_error(400, "invalid_grant", message, reason=reason)
    if isinstance(error, PermissionDenied):
        return oauth_error(400, "unauthorized_client", message, reason=reason)
    return oauth_error(400, "invalid_request", message, reason=reason)


def bearer_error(error: DomainError) -> JSONResponse:
    """A refusal of a call that a bearer token authorizes (RFC 6750 §3)."""
    reason, message = error.reason, error.message
    if isinstance(error, ResourceExhausted):
        return _throttled(error)
    if isinstance(error, Unavailable):
        return oauth_error(503, "temporarily_unavailable", message, reason=reason)
    if isinstance(error, Unauthenticated):
        challenge = f'Bearer realm="keyhold", error="invalid_token", error_description="{reason}"'
        return oauth_error(
            401, "invalid_token", message, reason=reason, headers={"www-authenticate": challenge}
        )
    if isinstance(error, PermissionDenied):
        challenge = 'Bearer realm="keyhold", error="insufficient_scope"'
        return oauth_error(
            403,
            "insufficient_scope",
            message,
            reason=reason,
            headers={"www-authenticate": challenge},
        )
    return oauth_error(400, "invalid_request", message, reason=reason)


def _throttled(error: ResourceExhausted) -> JSONResponse:
    retry_after = str(max(1, math.ceil(error.retry_after_seconds)))
    return oauth_error(
        429, "slow_down", error.message, reason=error.reason, headers={"retry-after": retry_after}
    )
