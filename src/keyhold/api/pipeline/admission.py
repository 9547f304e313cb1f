"""Admission: what every call of a method passes before its handler, whatever carried
it (gRPC, or the HTTP endpoints that share a method's policy): authentication, request
bounds, authorization and rate limiting, in that order, with refusals that are denials
recorded. The transport gathers what the call says about itself and turns a refusal
into its own kind of error; the rules are here once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from keyhold.api.pipeline.authentication import Authenticator, Authorization
from keyhold.api.pipeline.authorization import Authorizer
from keyhold.api.pipeline.bounds import request_check
from keyhold.api.pipeline.decoding import UndecodableRequest
from keyhold.api.pipeline.rate_limit import RateLimitGate
from keyhold.api.policy import MethodPolicy
from keyhold.domain.call import CallContext, TransportIdentity, set_current_call
from keyhold.domain.errors import DomainError, PermissionDenied, Unauthenticated
from keyhold.domain.principal import ANONYMOUS, Principal

# Refusals recorded as DENIED; a database outage during the check is not a denial.
_DENIALS = (Unauthenticated, PermissionDenied)
Denial = Callable[[CallContext, DomainError], Awaitable[None]]
# How a transport that authenticates callers its own way (HTTP client authentication)
# proves the caller, instead of a bearer token.
Authenticate = Callable[[], Awaitable[Principal]]


async def _no_denial_hook(call: CallContext, error: DomainError) -> None:
    return None


class Admission:
    """The pipeline's parts; `for_method` settles once what a method's policy decides
    about every call."""

    def __init__(
        self,
        authenticator: Authenticator,
        authorizer: Authorizer,
        rate_limits: RateLimitGate,
        on_denied: Denial = _no_denial_hook,
    ) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.rate_limits = rate_limits
        self.on_denied = on_denied

    def for_method(self, policy: MethodPolicy) -> MethodAdmission:
        return MethodAdmission(self, policy)


class MethodAdmission:
    def __init__(self, admission: Admission, policy: MethodPolicy) -> None:
        self._admission = admission
        self._policy = policy
        self._rate_limited = admission.rate_limits.applies_to(policy)
        self._check_bounds = request_check(policy.request_type)

    async def admit(
        self,
        request: Any,
        authorization: Authorization,
        peer: str,
        agent: str,
        request_id: str,
        trace_id: str,
        span_id: str,
        transport: TransportIdentity,
        authenticate: Authenticate | None = None,
    ) -> CallContext:
        """The admitted call, which is also the current call from here on. Raises the
        refusal (a DomainError) after recording it when it is a denial; the current
        call is then the caller as far as it was known. `authenticate`, when given,
        proves the caller instead of `authorization`."""
        policy, admission = self._policy, self._admission
        method = policy.full_method
        principal = (
            admission.authenticator.caller_without_waiting(policy, authorization)
            if authenticate is None
            else None
        )
        if principal is None:
            try:
                principal = await (
                    admission.authenticator.authenticate(policy, authorization)
                    if authenticate is None
                    else authenticate()
                )
            except Exception as exc:
                call = CallContext(
                    ANONYMOUS, peer, agent, request_id, trace_id, method, transport, span_id
                )
                set_current_call(call)
                if isinstance(exc, _DENIALS):
                    await admission.on_denied(call, exc)
                raise
        call = CallContext(principal, peer, agent, request_id, trace_id, method, transport, span_id)
        set_current_call(call)
        try:
            if isinstance(request, UndecodableRequest):
                raise request.error()
            if self._check_bounds is not None:  # before anything reads a field
                self._check_bounds(request, "")
            if admission.authorizer.check(policy, principal, transport):
                await admission.authorizer.check_owner(policy, principal, request)
            if self._rate_limited:
                await admission.rate_limits.check(policy, call, request)
        except Exception as exc:
            if isinstance(exc, _DENIALS):
                await admission.on_denied(call, exc)
            raise
        return call
