"""Serving a registry in the Prometheus text format on its own HTTP port.

prometheus_client's server runs in a daemon thread: a scrape never waits on the event
loop, and the loop never waits on a scrape.
"""

from __future__ import annotations

import asyncio
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsEndpoint:
    def __init__(self, address: str, registry: CollectorRegistry) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._registry = registry
        self._served: tuple[WSGIServer, threading.Thread] | None = None

    def start(self) -> int:
        """Bind and serve; returns the port (useful when asked for port 0)."""
        server, thread = start_http_server(self._port, self._host, self._registry)
        self._served = (server, thread)
        return int(server.server_port)

    async def stop(self) -> None:
        if self._served is None:
            return
        server, thread = self._served
        self._served = None
        await asyncio.to_thread(server.shutdown)  # waits for the serving loop to notice
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)
