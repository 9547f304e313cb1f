"""The HTTP listener: an ASGI app served by Hypercorn in the gRPC server's event loop.
Hypercorn takes a shutdown trigger instead of installing signal handlers, so the
server's own SIGTERM handling stays in charge of both listeners. The socket is bound
here, before Hypercorn starts, so that the port is known (a configured port of 0 picks
a free one) and a port in use fails at start, not in a background task."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import structlog
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp


class _ThroughStructlog(logging.Handler):
    """Hypercorn's own log records (warnings and errors: its start-up notice is below
    the level) through structlog's processor chain, like every other line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._log = structlog.get_logger("keyhold.http")

    def emit(self, record: logging.LogRecord) -> None:
        self._log.log(
            record.levelno, "http_server", message=record.getMessage(), exc_info=record.exc_info
        )


def _hypercorn_log() -> logging.Logger:
    logger = logging.getLogger("keyhold.http.hypercorn")
    if not logger.handlers:
        logger.addHandler(_ThroughStructlog())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


class _ContextKeepingConfig(Config):
    """Hypercorn's configuration, keeping the TLS context Hypercorn makes from it, so
    that renewed certificate files can be loaded into it: new handshakes use them."""

    kept_context: ssl.SSLContext | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        self.kept_context = super().create_ssl_context()
        return self.kept_context


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HttpListener:
    def __init__(
        self,
        app: ASGIApp,
        address: str,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        client_ca_file: Path | None = None,
        grace_seconds: float = 5.0,
        shared_port: bool = False,
    ) -> None:
        """With `cert_file` and `key_file` (PEM) it speaks TLS only, and with
        `client_ca_file` requires a client certificate it signed; `shared_port`: several
        worker processes listen on the port together."""
        self._app = app
        self._address = address
        self._cert_file, self._key_file = cert_file, key_file
        self._client_ca_file = client_ca_file
        self._config = _ContextKeepingConfig()
        self._grace = grace_seconds
        self._shared_port = shared_port
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Binds and starts serving; the bound port."""
        host, port = _split(self._address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._shared_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        config = self._config
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here
        config.accesslog = None  # each call is logged by the endpoints' own pipeline
        config.errorlog = _hypercorn_log()
        config.graceful_timeout = self._grace
        config.include_server_header = False
        if self._cert_file is not None and self._key_file is not None:
            config.certfile, config.keyfile = str(self._cert_file), str(self._key_file)
            if self._client_ca_file is not None:
                config.ca_certs = str(self._client_ca_file)
                config.verify_mode = ssl.CERT_REQUIRED
        self._task = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._stop.wait),  # type: ignore[arg-type]
            name="keyhold-http",
        )
        await asyncio.sleep(0)  # let it take the socket before anyone connects
        return self.port

    def reload_certificate(self) -> bool:
        """Reads the certificate and key files again (blocking: call it off the loop);
        new connections get them. False, keeping the current ones, when they do not
        load."""
        context = self._config.kept_context
        if context is None or self._cert_file is None or self._key_file is None:
            return False
        try:
            context.load_cert_chain(self._cert_file, self._key_file)
        except (OSError, ssl.SSLError) as exc:
            structlog.get_logger(__name__).warning("http_tls_reload_failed", error=str(exc))
            return False
        return True

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await self._task
