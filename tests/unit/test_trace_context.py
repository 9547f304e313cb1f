"""W3C `traceparent` parsing for the log and the audit trail when tracing is off."""

from __future__ import annotations

import pytest

from keyhold.api.pipeline.request_id import trace_context_from

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_a_valid_header_gives_trace_and_parent_span() -> None:
    assert trace_context_from(f"00-{TRACE}-{SPAN}-01") == (TRACE, SPAN)
    assert trace_context_from(f" 01-{TRACE}-{SPAN}-00 ") == (TRACE, SPAN)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}",
        f"00-{TRACE}-{SPAN}-01-extra",
    ],
)
def test_anything_else_gives_nothing(header: str | None) -> None:
    assert trace_context_from(header) == ("", "")
