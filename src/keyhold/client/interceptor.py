"""A grpc.aio server interceptor for services that accept Keyhold access tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from keyhold.client.verifier import TokenVerifier
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal

_principal: ContextVar[Principal | None] = ContextVar("keyhold_client_principal", default=None)


def current_principal() -> Principal:
    """The verified caller of the call being handled."""
    principal = _principal.get()
    if principal is None:
        raise LookupError("no Keyhold principal: is RequireKeyholdToken installed?")
    return principal


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, reason: str, message: str
) -> None:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="keyhold.client")
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    await context.abort(code, message, (("grpc-status-details-bin", status.SerializeToString()),))


class RequireKeyholdToken(grpc.aio.ServerInterceptor):
    """Every call must carry a valid Keyhold bearer token for the verifier's audience,
    with all of `scopes` (or those `method_scopes` names for its method);
    `public_methods` need none. The principal is available to handlers as
    `current_principal()`. `for_audience` builds the verifier too."""

    @classmethod
    def for_audience(
        cls,
        keyhold: grpc.aio.Channel,
        audience: str,
        scopes: Iterable[str] = (),
        *,
        issuer: str = "keyhold",
        method_scopes: dict[str, Iterable[str]] | None = None,
        public_methods: Iterable[str] = (),
    ) -> RequireKeyholdToken:
        """Tokens for `audience`, verified against the keys Keyhold publishes on
        `keyhold`."""
        verifier = TokenVerifier(keyhold, audience=audience, issuer=issuer)
        return cls(verifier, scopes, method_scopes=method_scopes, public_methods=public_methods)

    def __init__(
        self,
        verifier: TokenVerifier,
        scopes: Iterable[str] = (),
        *,
        method_scopes: dict[str, Iterable[str]] | None = None,
        public_methods: Iterable[str] = (),
    ) -> None:
        self._verifier = verifier
        self._scopes = frozenset(scopes)
        self._method_scopes = {m: frozenset(s) for m, s in (method_scopes or {}).items()}
        self._public = frozenset(public_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method in self._public:
            return handler
        needed = self._method_scopes.get(method, self._scopes)
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._admit(context, needed)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await self._admit(context, needed)
                async for response in stream_behavior(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler

    async def _admit(
        self, context: grpc.aio.ServicerContext[Any, Any], needed: frozenset[str]
    ) -> None:
        header = next(
            (v for k, v in context.invocation_metadata() or () if k == "authorization"), None
        )
        scheme, _, token = (header if isinstance(header, str) else "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "CREDENTIALS_MISSING",
                "a Keyhold bearer token is required",
            )
        try:
            principal = await self._verifier.verify(token.strip())
        except Unauthenticated as error:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, error.reason, error.message)
            raise
        if not needed <= principal.scopes:
            missing = ", ".join(sorted(needed - principal.scopes))
            await _abort(
                context, grpc.StatusCode.PERMISSION_DENIED, "SCOPE_REQUIRED", f"needs {missing}"
            )
        _principal.set(principal)
