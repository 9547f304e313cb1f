"""Facts about the current call that handlers and the audit trail need."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

from keyhold.domain.principal import ANONYMOUS, Principal


@dataclass(frozen=True, slots=True)
class TransportIdentity:
    """How the call's connection is secured and, under mutual TLS, who the client
    certificate names. Set from the connection, never from anything the caller sends."""

    security_type: str = ""  # "ssl", "insecure", "local"; "" when unknown
    client_certificate: bool = False  # a client certificate verified in the handshake
    common_name: str = ""
    subject_alternative_names: tuple[str, ...] = ()

    @property
    def is_mutual_tls(self) -> bool:
        return self.security_type == "ssl" and self.client_certificate


NO_TRANSPORT = TransportIdentity()
PLAINTEXT = TransportIdentity("insecure")  # what gRPC says of a connection without TLS


class CallContext(NamedTuple):
    """The caller and where the call came from. Never holds a secret.

    Made for every call, so a named tuple: immutable like a frozen dataclass, and a
    quarter of its construction cost."""

    principal: Principal = ANONYMOUS
    peer: str = ""
    user_agent: str = ""
    request_id: str = ""
    trace_id: str = ""
    method: str = ""
    transport: TransportIdentity = NO_TRANSPORT
    span_id: str = ""  # this call's server span, or the caller's span without tracing

    @property
    def peer_ip(self) -> str:
        """`ipv4:10.0.0.1:5000` → `10.0.0.1`; `ipv6:[::1]:5000` → `::1`."""
        kind, _, rest = self.peer.partition(":")
        if kind == "ipv6" and rest.startswith("["):
            return rest[1 : rest.find("]")]
        if kind == "ipv4":
            return rest.rpartition(":")[0]
        return self.peer


_NO_CALL = CallContext()
_current_call: ContextVar[CallContext] = ContextVar("keyhold_call")


def current_call() -> CallContext:
    """The context of the call being served (a default one outside any call)."""
    return _current_call.get(_NO_CALL)


def set_current_call(call: CallContext) -> None:
    _current_call.set(call)
