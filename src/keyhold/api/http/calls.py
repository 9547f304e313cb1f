"""What an HTTP request says about itself, read the way the gRPC interceptor reads a
call's metadata, and its admission under its gRPC twin's policy."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope

from keyhold.api.pipeline.admission import Admission, Authenticate, MethodAdmission
from keyhold.api.pipeline.authentication import Authorization, authorization_of
from keyhold.api.pipeline.request_id import request_id_from, trace_context_from
from keyhold.api.policy import MethodPolicy
from keyhold.domain.call import PLAINTEXT, CallContext, TransportIdentity, current_call
from keyhold.domain.errors import FieldViolation, InvalidArgument

MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
_TLS = TransportIdentity("ssl")


class HttpAdmission:
    """Each endpoint's admission, by its gRPC twin's full method name."""

    def __init__(self, admission: Admission, policies: Mapping[str, MethodPolicy]) -> None:
        self._admission = admission
        self._policies = policies
        self._methods: dict[str, MethodAdmission] = {}

    def for_twin(self, full_method: str) -> MethodAdmission:
        admitted = self._methods.get(full_method)
        if admitted is None:
            admitted = self._admission.for_method(self._policies[full_method])
            self._methods[full_method] = admitted
        return admitted

    async def admit(
        self,
        twin: str,
        request: Request,
        message: Any,
        authorization: Authorization = None,
        authenticate: Authenticate | None = None,
    ) -> CallContext:
        """Admits `request` as a call of `twin` carrying `message` (the twin's request,
        built from the HTTP one): bounds, authorization and rate limits as over gRPC."""
        arrived = current_call()  # what CompletionRecording read of the request
        if not arrived.request_id:
            arrived = arrival_of(request.scope)
        return await self.for_twin(twin).admit(
            message,
            authorization,
            arrived.peer,
            arrived.user_agent,
            arrived.request_id,
            arrived.trace_id,
            arrived.span_id,
            _TLS if request.url.scheme == "https" else PLAINTEXT,
            authenticate,
        )


def arrival_of(scope: Scope) -> CallContext:
    """What a request says about itself before anything admits it: the peer as gRPC
    names it (`ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`, so that rate limits and audit
    records key HTTP and gRPC callers alike), the user agent, its request id (its own,
    when acceptable, else a new one) and the trace it continues."""
    headers = Headers(scope=scope)
    trace_id, span_id = trace_context_from(headers.get("traceparent"))
    return CallContext(
        peer=_peer(scope.get("client")),
        user_agent=(headers.get("user-agent") or "")[:256],
        request_id=request_id_from(headers.get("x-request-id")),
        trace_id=trace_id,
        span_id=span_id,
    )


def _peer(client: object) -> str:
    if not isinstance(client, tuple | list) or len(client) != 2:
        return "unknown"
    host, port = client
    try:
        address = ipaddress.ip_address(str(host))
    except ValueError:
        return "unknown"
    if address.version == 6:
        return f"ipv6:[{address}]:{port}"
    return f"ipv4:{address}:{port}"


def authorization_header(request: Request) -> Authorization:
    """The `authorization` header, judged as gRPC's metadata is: none, once, or
    unusable (sent twice, or too long)."""
    entries = request.headers.items()
    return authorization_of(dict(entries), entries)


async def form_of(request: Request) -> dict[str, str]:
    """The form body (RFC 6749 §3.2: `application/x-www-form-urlencoded`, UTF-8), each
    parameter at most once. INVALID_ARGUMENT otherwise; the body is read no further
    than `MAX_FORM_BYTES`."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise request_invalid("content-type", f"the body must be {FORM_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise request_invalid("body", f"the body is longer than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise request_invalid("body", "the body is not UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise request_invalid(name, "a parameter may be sent once")
        form[name] = value
    return form


def request_invalid(field: str, message: str, expected: str = "") -> InvalidArgument:
    """A request the endpoint cannot read: REQUEST_INVALID naming the field and what it
    expects (the message itself when not given)."""
    return InvalidArgument(
        "REQUEST_INVALID",
        message,
        [FieldViolation(field[:64], expected or message)],
        domain="keyhold",
    )
