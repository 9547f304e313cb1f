"""The provider HTTP client under the egress policy, against scripted servers on loopback.

Names resolve through a scripted resolver, and connections to vetted addresses go
through a routing backend that records them and reaches only the loopback test servers
it has routes for: no traffic leaves 127.0.0.1, whatever address a test pretends."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpcore
import pytest

from keyhold.adapters.oauth.client import HttpOAuthClient
from keyhold.adapters.oauth.egress_transport import EgressTransport
from keyhold.domain.provider.egress import EgressPolicy, EgressRefused, IPAddress
from keyhold.domain.provider.oauth import ProviderUnreachable
from keyhold.domain.provider.providers import AuthType, Provider
from tests.support.pki import CertificateAuthority

NAME = "bank.example.com"
PUBLIC = "93.184.216.34"  # never connected to: the routing backend sends it to loopback
TOKEN_ANSWER = b'{"access_token": "upstream-access", "token_type": "Bearer", "expires_in": 60}'
STRICT = EgressPolicy()
DEVELOPMENT = EgressPolicy(allow_loopback_http=True)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def provider(token_endpoint: str) -> Provider:
    return Provider(
        slug="bank",
        display_name="Bank",
        auth_type=AuthType.OAUTH2,
        authorization_endpoint=f"https://{NAME}/authorize",
        token_endpoint=token_endpoint,
        revocation_endpoint="",
        client_id="keyhold",
        default_scopes=(),
        has_client_secret=True,
        created_at=NOW,
        updated_at=NOW,
    )


class ScriptedResolver:
    """Answers each lookup with the next of `answers`, the last one ever after."""

    def __init__(self, *answers: Iterable[str]) -> None:
        self._answers = [[ipaddress.ip_address(a) for a in answer] for answer in answers]
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]


class RoutingBackend(httpcore.AsyncNetworkBackend):
    """Records every connection asked for; reaches only the loopback ports routed to."""

    def __init__(self, routes: dict[tuple[str, int], int] | None = None) -> None:
        self.connects: list[tuple[str, int]] = []
        self._routes = routes or {}
        self._loopback = httpcore.AnyIOBackend()

    async def connect_tcp(  # type: ignore[override]
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        **_: object,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if (host, port) not in self._routes:
            raise httpcore.ConnectError(f"test: no route to {host}:{port}")
        return await self._loopback.connect_tcp("127.0.0.1", self._routes[host, port], timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class Scripted:
    port: int
    requests: list[dict[str, str]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(
    answer: Answer, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Scripted]:
    """A one-answer-per-connection HTTP/1.1 server on 127.0.0.1."""
    scripted = Scripted(port=0)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: scripted.server_names.append(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            await reader.readexactly(int(headers.get("content-length", "0")))
            scripted.requests.append(headers)
            await answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    scripted.port = server.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        server.close()


def answering(status: str, body: bytes, *headers: str) -> Answer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        lines = [
            f"HTTP/1.1 {status}",
            *headers,
            f"content-length: {len(body)}",
            "connection: close",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return answer


def client(
    policy: EgressPolicy,
    resolver: ScriptedResolver | None = None,
    backend: httpcore.AsyncNetworkBackend | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 3.0,
    max_response_bytes: int = 1024 * 1024,
) -> HttpOAuthClient:
    transport = EgressTransport(
        policy,
        resolver=resolver or ScriptedResolver(["127.0.0.2"]),
        network_backend=backend,
        ssl_context=tls,
    )
    return HttpOAuthClient(
        timeout_seconds=timeout,
        retries=0,
        egress=policy,
        transport=transport,
        max_response_bytes=max_response_bytes,
    )


@pytest.fixture
def pki(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for NAME, client context trusting its CA)."""
    authority = CertificateAuthority("egress tests")
    cert, key = authority.server(NAME).write(tmp_path, "bank")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cadata=authority.cert_pem.decode())
    return served, trusting


async def test_a_name_that_resolves_to_loopback_is_refused_before_any_connection() -> None:
    resolver, backend = ScriptedResolver(["127.0.0.1"]), RoutingBackend()
    oauth = client(STRICT, resolver, backend)
    with pytest.raises(EgressRefused, match=r"127\.0\.0\.1"):
        await oauth.refresh(provider(f"https://{NAME}/token"), "secret", "refresh")
    assert resolver.asked == [NAME]
    assert backend.connects == []
    await oauth.close()


@pytest.mark.parametrize(
    "answer",
    [[PUBLIC, "10.0.0.1"], ["::ffff:169.254.169.254"], ["fd00:ec2::254"], ["100.100.100.200"]],
)
async def test_one_refused_address_refuses_the_name(answer: list[str]) -> None:
    backend = RoutingBackend({(PUBLIC, 443): 9})
    oauth = client(STRICT, ScriptedResolver(answer), backend)
    with pytest.raises(EgressRefused):
        await oauth.exchange_code(provider(f"https://{NAME}/token"), "s", "code", "v", "r")
    assert backend.connects == []
    await oauth.close()


async def test_the_connection_goes_to_the_vetted_address_and_a_rebinding_is_refused(
    pki: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    served, trusting = pki
    async with scripted_server(answering("200 OK", TOKEN_ANSWER), tls=served) as server:
        resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])  # the second answer rebinds
        backend = RoutingBackend({(PUBLIC, 443): server.port})
        oauth = client(STRICT, resolver, backend, tls=trusting)
        endpoint = provider(f"https://{NAME}/token")

        tokens = await oauth.refresh(endpoint, "secret", "refresh")
        assert tokens.access_token == "upstream-access"
        # Connected to the address that was checked, not to the name (no second lookup);
        # TLS verified the certificate for the name and sent it as SNI; Host kept it too.
        assert backend.connects == [(PUBLIC, 443)]
        assert server.server_names == [NAME]
        assert server.requests[0]["host"] == NAME

        with pytest.raises(EgressRefused):  # the answer closed the connection: a new one
            await oauth.refresh(endpoint, "secret", "refresh")
        assert resolver.asked == [NAME, NAME]
        assert backend.connects == [(PUBLIC, 443)]
        assert len(server.requests) == 1
        await oauth.close()


async def test_an_allowlisted_name_may_resolve_to_a_private_address(
    pki: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    served, trusting = pki
    policy = EgressPolicy.from_entries([NAME], allow_loopback_http=False)
    async with scripted_server(answering("200 OK", TOKEN_ANSWER), tls=served) as server:
        backend = RoutingBackend({("10.0.0.7", 443): server.port})
        oauth = client(policy, ScriptedResolver(["10.0.0.7"]), backend, tls=trusting)
        tokens = await oauth.refresh(provider(f"https://{NAME}/token"), "secret", "refresh")
        assert tokens.access_token == "upstream-access"
        assert backend.connects == [("10.0.0.7", 443)]
        await oauth.close()


async def test_plain_http_to_loopback_needs_the_development_setting() -> None:
    async with scripted_server(answering("200 OK", TOKEN_ANSWER)) as server:
        endpoint = provider(f"http://127.0.0.1:{server.port}/token")
        strict = client(STRICT)
        with pytest.raises(EgressRefused, match="plain http"):
            await strict.refresh(endpoint, "secret", "refresh")
        assert server.requests == []
        development = client(DEVELOPMENT)
        assert (await development.refresh(endpoint, "secret", "refresh")).access_token
        assert len(server.requests) == 1
        await strict.close()
        await development.close()


async def test_a_redirect_is_not_followed() -> None:
    async with scripted_server(answering("200 OK", TOKEN_ANSWER)) as elsewhere:
        moved = answering("302 Found", b"", f"location: http://127.0.0.1:{elsewhere.port}/token")
        async with scripted_server(moved) as server:
            oauth = client(DEVELOPMENT)
            with pytest.raises(ProviderUnreachable, match="RedirectNotFollowed"):
                await oauth.refresh(
                    provider(f"http://127.0.0.1:{server.port}/token"), "secret", "refresh"
                )
            assert len(server.requests) == 1
            assert elsewhere.requests == []
            await oauth.close()


def _flood(declared: bool) -> Answer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        length = [f"content-length: {8 * 1024 * 1024}"] if declared else []
        head = ["HTTP/1.1 200 OK", "content-type: application/json", *length, "connection: close"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"access_token": "')
        for _ in range(128):
            writer.write(b"x" * 65_536)
            await writer.drain()

    return answer


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
async def test_an_oversized_answer_is_cut_off(declared: bool) -> None:
    async with scripted_server(_flood(declared)) as server:
        oauth = client(DEVELOPMENT, max_response_bytes=64 * 1024)
        with pytest.raises(ProviderUnreachable, match="ResponseTooLarge"):
            await oauth.refresh(
                provider(f"http://127.0.0.1:{server.port}/token"), "secret", "refresh"
            )
        await oauth.close()


async def test_a_compressed_answer_that_was_not_asked_for_is_refused() -> None:
    body = gzip.compress(TOKEN_ANSWER)
    async with scripted_server(answering("200 OK", body, "content-encoding: gzip")) as server:
        oauth = client(DEVELOPMENT)
        with pytest.raises(ProviderUnreachable, match="UnaskedEncoding"):
            await oauth.refresh(
                provider(f"http://127.0.0.1:{server.port}/token"), "secret", "refresh"
            )
        assert server.requests[0]["accept-encoding"] == "identity"
        await oauth.close()


async def test_a_dripping_answer_ends_at_the_deadline() -> None:
    """Each byte comes well within the read timeout; the whole exchange may not take
    longer than the timeout all the same."""

    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with scripted_server(drip) as server:
        oauth = client(DEVELOPMENT, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ProviderUnreachable, match="TimeoutException"):
            await oauth.refresh(
                provider(f"http://127.0.0.1:{server.port}/token"), "secret", "refresh"
            )
        assert time.monotonic() - started < 2.0
        await oauth.close()
