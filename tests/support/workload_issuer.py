"""A stand-in for a Kubernetes cluster's service-account token issuer on loopback: it
publishes a real JWK Set over TLS (its certificate from a throwaway CA) and mints RS256
tokens the way a projected service-account token is made. Standard library HTTP server
in a daemon thread, so it serves whichever event loop the test runs."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.pki import CertificateAuthority

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "keyhold"


class WorkloadIssuer:
    def __init__(self, directory: Path, *, cache_control: str = "max-age=300") -> None:
        authority = CertificateAuthority("Cluster CA")
        self.ca_file = authority.write(directory, "cluster-ca")
        cert, key = authority.server().write(directory, "issuer")
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self.cache_control = cache_control
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []  # kids in the JWKS
        self.fetches = 0
        self.down = False
        self.rotate()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def jwks_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/openid/v1/jwks"

    def rotate(self) -> str:
        """A new signing key, published beside the old ones; its kid."""
        kid = f"k{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def token(self, subject: str, *, kid: str | None = None, **claims: Any) -> str:
        """A projected service-account token for `subject`, signed by the newest key."""
        kid = kid or self.published[-1]
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "sub": subject,
            "aud": [AUDIENCE],
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(body, self.keys[kid], "RS256", {"kid": kid})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                if issuer.down or self.path != "/openid/v1/jwks":
                    self.send_error(503 if issuer.down else 404)
                    return
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/jwk-set+json")
                self.send_header("cache-control", issuer.cache_control)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
