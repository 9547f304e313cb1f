"""The server's own limits on connections: a connection without calls is closed after
the idle limit, an unfinished TLS handshake after the handshake timeout, connections
beyond the per-process cap at once, and each connection is told how many calls it may
have open at once.

The peers here are raw sockets speaking just enough HTTP/2 (the client preface and an
empty SETTINGS frame), so that what closes the connection is the server."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from keyhold.server import build_server
from tests.support.pki import make_pki
from tests.support.servers import settings_for

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = struct.pack(">I", 0)[1:] + bytes([0x4, 0]) + struct.pack(">I", 0)
SETTINGS, GOAWAY = 0x4, 0x7
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
WAIT = 10.0  # far beyond every limit set here, far below gRPC's defaults


@asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[int]:
    app = await build_server(settings_for(tmp_path, **overrides))
    port = await app.start()
    try:
        yield port
    finally:
        await app.stop(grace=0.2)


async def until_closed(
    port: int, send: bytes = b"", keep_open_for: float = WAIT
) -> tuple[float, list[tuple[int, bytes]]]:
    """Connect, send `send`, then read until the server closes: seconds it took and the
    frames it sent ((type, payload) pairs)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(send)
    started = time.monotonic()
    received = b""
    try:
        async with asyncio.timeout(keep_open_for):
            while data := await reader.read(65536):
                received += data
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {keep_open_for}s") from None
    finally:
        writer.close()
    return time.monotonic() - started, _frames(received)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


async def test_a_connection_without_calls_is_closed_after_the_idle_limit(tmp_path: Path) -> None:
    async with serving(tmp_path, connection_idle_seconds=1, handshake_timeout_seconds=30) as port:
        took, frames = await until_closed(port, PREFACE + EMPTY_SETTINGS)

    assert 0.8 < took < 5, took
    assert GOAWAY in [kind for kind, _ in frames]  # closed by the server, politely


async def test_an_unfinished_tls_handshake_is_closed(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with serving(
        tmp_path,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        handshake_timeout_seconds=1,
        connection_idle_seconds=60,
    ) as port:
        took, frames = await until_closed(port)  # connects, never says ClientHello

    assert 0.8 < took < 5, took
    assert frames == []


async def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=3, connection_idle_seconds=2) as port:
        outcomes = await asyncio.gather(
            *(until_closed(port, PREFACE + EMPTY_SETTINGS) for _ in range(5))
        )
        served = [took for took, frames in outcomes if frames]
        refused = [took for took, frames in outcomes if not frames]
        assert len(served) == 3
        assert len(refused) == 2
        assert max(refused) < 0.5 < min(served)  # the served ones lasted until idle
        # The cap counts connections held, not made: room again once they are gone.
        _, frames = await until_closed(port, PREFACE + EMPTY_SETTINGS)
        assert frames


async def test_each_connection_is_told_its_concurrent_call_limit(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_streams=7, connection_idle_seconds=1) as port:
        _, frames = await until_closed(port, PREFACE + EMPTY_SETTINGS)

    server_settings = next(payload for kind, payload in frames if kind == SETTINGS and payload)
    advertised = dict(
        struct.unpack(">HI", server_settings[i : i + 6]) for i in range(0, len(server_settings), 6)
    )
    assert advertised[SETTINGS_MAX_CONCURRENT_STREAMS] == 7
