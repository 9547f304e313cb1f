"""Request ids (`x-request-id`, or generated) and W3C trace context (`traceparent`)."""

from __future__ import annotations

import re
import secrets

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(header: str | None) -> str:
    if header is not None and _ACCEPTABLE.match(header):
        return header
    return secrets.token_hex(16)


_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_NO_TRACE = ("", "")


def trace_context_from(traceparent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C `traceparent` header, or empty strings."""
    if traceparent is None:
        return _NO_TRACE
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return _NO_TRACE
    return match.group(1), match.group(2)
