"""Channels that carry a service account's token on every call.

With TLS (or a local-credentials connection) the token travels as gRPC call
credentials. gRPC refuses call credentials on plaintext channels, so on those (for
development on loopback) a client interceptor adds the same header instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from keyhold.client.credentials import ServiceAccountCredentials


class _TokenPlugin(grpc.AuthMetadataPlugin):
    """Runs on a gRPC thread: fetch the token on the channel's event loop."""

    def __init__(self, credentials: ServiceAccountCredentials, loop: asyncio.AbstractEventLoop):
        self._credentials = credentials
        self._loop = loop

    def __call__(
        self,
        context: grpc.AuthMetadataContext,
        callback: grpc.AuthMetadataPluginCallback,
    ) -> None:
        future = asyncio.run_coroutine_threadsafe(self._credentials.token(), self._loop)

        def done(result: Any) -> None:
            try:
                callback((("authorization", f"Bearer {result.result()}"),), None)
            except Exception as exc:  # the call fails UNAUTHENTICATED with this error
                callback((), exc)

        future.add_done_callback(done)


class _BearerInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor
):
    def __init__(self, credentials: ServiceAccountCredentials) -> None:
        self._credentials = credentials

    async def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = f"Bearer {await self._credentials.token()}"
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._with_token(details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._with_token(details), request)


def keyhold_channel(
    target: str,
    credentials: ServiceAccountCredentials | None = None,
    *,
    keyhold_target: str | None = None,
    channel_credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` whose calls carry `credentials`' token.

    `channel_credentials`: TLS (`tls_channel_credentials(...)` from PEM files, with a
    client certificate for mutual TLS, or `grpc.ssl_channel_credentials(...)`) or
    `grpc.local_channel_credentials()`; the token is then attached as call credentials.
    Without it the channel is plaintext and the token is added by an interceptor.
    Tokens are requested from `keyhold_target` (default: `target`) over a channel of
    the same kind without credentials. Call from within the event loop.
    """
    if credentials is not None:
        token_channel = (
            grpc.aio.secure_channel(keyhold_target or target, channel_credentials)
            if channel_credentials is not None
            else grpc.aio.insecure_channel(keyhold_target or target)
        )
        credentials.bind(token_channel)
    if channel_credentials is not None:
        if credentials is None:
            return grpc.aio.secure_channel(target, channel_credentials)
        plugin = _TokenPlugin(credentials, asyncio.get_running_loop())
        composite = grpc.composite_channel_credentials(
            channel_credentials, grpc.metadata_call_credentials(plugin, name="keyhold")
        )
        return grpc.aio.secure_channel(target, composite)
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.insecure_channel(target, interceptors=[_BearerInterceptor(credentials)])
