"""The processor chain every log line goes through, and its timestamps."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import structlog

from keyhold import log_config
from keyhold.log_config import _UtcTimestamp, configure_logging, utc_timestamp


@pytest.fixture
def output() -> Iterator[io.BytesIO]:
    written = io.BytesIO()
    configure_logging("json", "info", output=written, cache_loggers=False)
    try:
        yield written
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def test_a_json_line_has_the_context_the_level_and_a_utc_timestamp(output: io.BytesIO) -> None:
    structlog.contextvars.bind_contextvars(worker=3)
    structlog.get_logger("x").info("rpc_completed", method="/m", code="OK")
    line = orjson.loads(output.getvalue())
    assert {k: v for k, v in line.items() if k != "timestamp"} == {
        "worker": 3,
        "method": "/m",
        "code": "OK",
        "event": "rpc_completed",
        "level": "info",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])


def test_lines_below_the_level_are_not_written() -> None:
    written = io.BytesIO()
    configure_logging("json", "warning", output=written, cache_loggers=False)
    try:
        log = structlog.get_logger("x")
        log.info("rpc_completed")
        assert not log.is_enabled_for(logging.INFO)
    finally:
        structlog.reset_defaults()
    assert written.getvalue() == b""


def test_the_timestamp_follows_the_clock() -> None:
    first = utc_timestamp()
    second = utc_timestamp()
    assert first <= second


@pytest.mark.parametrize(
    "nanoseconds",
    [1_796_130_000_000_005_999, 1_796_130_000_999_999_000, 1_796_130_001_000_000_000, 0],
)
def test_the_timestamp_is_utc_iso_to_the_microsecond(
    nanoseconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As structlog's ISO/UTC stamper writes it, microseconds zero-padded."""
    stamp = _UtcTimestamp()
    stamp()  # a prefix cached for another second must not leak into this one
    monkeypatch.setattr(log_config.time, "time_ns", lambda: nanoseconds)
    expected = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=nanoseconds // 1000)
    assert stamp() == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
