"""Request ids (`x-request-id`, or generated) and W3C trace ids (`traceparent`)."""

from __future__ import annotations

import re
import secrets

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(header: str | None) -> str:
    if header is not None and _ACCEPTABLE.match(header):
        return header
    return secrets.token_hex(16)


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_from(traceparent: str | None) -> str:
    """The trace id of a W3C `traceparent` header, or empty."""
    if traceparent is None:
        return ""
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None or match.group(1) == "0" * 32:
        return ""
    return match.group(1)
