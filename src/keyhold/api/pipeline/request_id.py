"""Request ids (`x-request-id`, or generated) and W3C trace context (`traceparent`)."""

from __future__ import annotations

import itertools
import os
import re
import secrets

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


class _RequestIds:
    """A random per-process prefix and a counter: unique without a random draw per call
    (request ids correlate log lines; they guard nothing)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)  # each worker its own prefix

    def renew(self) -> None:
        self.prefix = secrets.token_hex(8) + "-"
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_generated = _RequestIds()


def request_id_from(header: str | None) -> str:
    if header is not None and _ACCEPTABLE.match(header):
        return header
    return _generated.next()


_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\Z")
_NO_TRACE = ("", "")


def trace_context_from(traceparent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C `traceparent` header, or empty strings."""
    if traceparent is None:
        return _NO_TRACE
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return _NO_TRACE
    return match.group(1), match.group(2)
