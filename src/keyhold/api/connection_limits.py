"""gRPC's own limits on the server's connections, as channel arguments of `aio.server`.

Without them gRPC keeps a connection that never finishes its TLS handshake for two
minutes, and one that finished it but makes no call (or never even sends HTTP/2's
preface) for as long as the peer keeps it open; it accepts any number of connections
and of concurrent calls on each. Every such connection holds a file descriptor and
gRPC's buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

# Keepalive: while calls are open, the server pings a connection quiet for a minute and
# drops it if no answer comes within 20 seconds (a peer gone without a FIN otherwise
# holds its calls until TCP gives up, after hours).
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Clients may ping no more often than once a minute without data; the third ping
# sooner than that (two strikes) ends their connection with GOAWAY "too_many_pings".
MIN_CLIENT_PING_INTERVAL_MS = 60_000
MAX_PING_STRIKES = 2


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    idle_seconds: float  # a connection without a call for this long is closed
    max_age_seconds: float  # every connection is closed after this long...
    max_age_grace_seconds: float  # ...its calls under way given this long to finish
    handshake_timeout_seconds: float  # to finish TLS (or, in plaintext, the setup)
    max_concurrent_streams: int  # calls at once on one connection
    max_connections: int  # connections one process holds at once

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_connection_idle_ms", _ms(self.idle_seconds)),
            ("grpc.max_connection_age_ms", _ms(self.max_age_seconds)),
            ("grpc.max_connection_age_grace_ms", _ms(self.max_age_grace_seconds)),
            ("grpc.server_handshake_timeout_ms", _ms(self.handshake_timeout_seconds)),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            # Beyond it a new connection is closed as soon as it is accepted.
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
