"""An httpx transport whose every connection goes to an address the egress policy vetted.

The host is resolved here, every address it resolves to is checked, and the socket is
opened to one of those very addresses, while TLS (SNI and the certificate check) and
the Host header keep the name. There is no second resolution between the check and the
connection, so a name that answers one address to a check and another to the connect
(DNS rebinding) cannot reach a refused address. Built on httpcore's public network
backend interface; proxies from the environment are not used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import contextmanager
from pathlib import Path

import httpcore
import httpx

from keyhold.domain.provider.egress import EgressPolicy, EgressRefused, IPAddress, literal_address

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives for `host`, without blocking the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: dict[IPAddress, None] = {}
    for *_, sockaddr in infos:
        try:
            addresses[ipaddress.ip_address(sockaddr[0])] = None
        except ValueError:  # not an IP socket address
            continue
    return list(addresses)


def verifying_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """What outbound https is verified against: the CAs of `ca_file` (PEM), or None for
    httpcore's default (the public roots, certifi)."""
    return None if ca_file is None else ssl.create_default_context(cafile=str(ca_file))


class VettedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against the policy, then connects to a checked
    address through `inner`."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._vetted(host, port, timeout)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:  # try the next vetted address
                failure = exc
        assert failure is not None  # _vetted returns at least one address
        raise failure

    async def _vetted(self, host: str, port: int, seconds: float | None) -> Sequence[IPAddress]:
        literal = literal_address(host)
        if literal is not None:
            addresses: Sequence[IPAddress] = [literal]
        else:
            try:
                async with asyncio.timeout(seconds):
                    addresses = await self._resolve(host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
            except OSError as exc:
                raise httpcore.ConnectError(f"{host} cannot be resolved: {exc}") from exc
            if not addresses:
                raise httpcore.ConnectError(f"{host} has no address")
        for address in addresses:  # one refused address refuses the name
            self._policy.check_address(host, port, address)
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("provider endpoints are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# Most specific first: the first match names the error.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for theirs, ours in _HTTPX_ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)  # the pool's stream returns its connection
        if close is not None:
            await close()


class EgressTransport(httpx.AsyncBaseTransport):
    """httpx over a connection pool whose connections pass the egress policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        """`resolver` and `network_backend` (where vetted connections are opened) are
        replaceable for tests; `ssl_context` defaults to httpcore's (certifi roots)."""
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=VettedNetworkBackend(policy, resolver, network_backend),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def outbound_client(
    transport: httpx.AsyncBaseTransport, timeout_seconds: float, accept: str
) -> httpx.AsyncClient:
    """An httpx client for the server's own requests: through `transport` (an
    EgressTransport), following no redirect, taking nothing from the environment (no
    proxy, netrc or CA bundle)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        headers={"accept": accept},
    )
