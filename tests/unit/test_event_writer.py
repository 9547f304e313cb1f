"""The per-RPC log line's fast path: the same JSON line structlog would write, batched
for a few milliseconds into writes of whole lines that a shared pipe keeps whole."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator

import orjson
import pytest
import structlog

from keyhold.log_config import (
    FLUSH_AFTER_SECONDS,
    configure_logging,
    event_writer,
    flush_lines,
    utc_timestamp,
)


class RecordingOutput(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().write(data)


@pytest.fixture
def output() -> Iterator[RecordingOutput]:
    recording = RecordingOutput()
    configure_logging("json", "info", output=recording, cache_loggers=False)
    try:
        yield recording
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def test_the_line_has_the_keys_structlog_writes(output: RecordingOutput) -> None:
    structlog.get_logger("x").info("rpc_completed", method="/m", code="OK")
    by_structlog = orjson.loads(output.writes[-1])
    write = event_writer("rpc_completed", "x")
    assert write is not None
    write(method="/m", code="OK")  # no event loop here: written at once
    fast = orjson.loads(output.writes[-1])
    assert fast.keys() == by_structlog.keys()
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in by_structlog.items() if k != "timestamp"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", fast["timestamp"])


def test_context_bound_before_the_writer_is_made_is_in_every_line(
    output: RecordingOutput,
) -> None:
    structlog.contextvars.bind_contextvars(worker=3)
    write = event_writer("rpc_completed", "x")
    assert write is not None
    write(code="OK")
    assert orjson.loads(output.writes[-1])["worker"] == 3


async def test_lines_leave_together_in_whole_line_writes_of_at_most_4_kib(
    output: RecordingOutput,
) -> None:
    write = event_writer("rpc_completed", "x")
    assert write is not None
    write(number=0)
    await asyncio.sleep(0)
    write(number=1)  # a later loop iteration, within the flush interval
    await asyncio.sleep(0)
    write(number=2)
    assert output.writes == []  # not yet: lines wait up to FLUSH_AFTER_SECONDS
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert len(output.writes) == 1  # the three lines in one write
    output.writes.clear()
    for number in range(100):
        write(method="/keyhold.identity.v1.IdentityService/WhoAmI", number=number)
    assert 1 < len(output.writes) < 100  # full writes leave at once
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert all(len(chunk) <= 4096 and chunk.endswith(b"\n") for chunk in output.writes)
    lines = b"".join(output.writes).splitlines()
    assert [orjson.loads(line)["number"] for line in lines] == list(range(100))


async def test_flush_lines_writes_what_waits(output: RecordingOutput) -> None:
    write = event_writer("rpc_completed", "x")
    assert write is not None
    write(number=7)
    assert output.writes == []
    flush_lines()  # as the server does when it stops
    assert [orjson.loads(line)["number"] for line in output.writes] == [7]


def test_no_writer_when_info_is_filtered_out() -> None:
    configure_logging("json", "warning", output=io.BytesIO(), cache_loggers=False)
    try:
        assert event_writer("rpc_completed", "x") is None
    finally:
        structlog.reset_defaults()


def test_the_timestamp_follows_the_clock() -> None:
    first = utc_timestamp()
    second = utc_timestamp()
    assert first <= second


def test_once_structlog_is_configured_otherwise_the_line_goes_through_structlog(
    output: RecordingOutput,
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as captured:
        write = event_writer("rpc_completed", "x")
        assert write is not None
        write(code="OK")
    assert captured == [{"event": "rpc_completed", "code": "OK", "log_level": "info"}]
    assert output.writes == []  # not to the stream configure_logging was given
