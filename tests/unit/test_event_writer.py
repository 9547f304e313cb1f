"""The per-RPC log line's fast path: the same JSON line structlog would write, batched
for a few milliseconds into writes of whole lines; a pipe shared by several workers gets
no write larger than it keeps whole."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
import structlog

from keyhold import log_config
from keyhold.log_config import (
    FLUSH_AFTER_SECONDS,
    LARGEST_WRITE,
    PIPE_BUF,
    _UtcTimestamp,
    _write_limit,
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


@pytest.fixture
def shared_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as one of several workers writing to the same output."""
    monkeypatch.setattr(log_config._Config, "shared", False)
    log_config.share_output()
    assert log_config._Config.shared


async def test_lines_leave_together_in_one_write_per_interval(output: RecordingOutput) -> None:
    write = event_writer("rpc_completed", "x")
    assert write is not None
    for number in range(100):  # about 10 KiB
        write(method="/keyhold.identity.v1.IdentityService/WhoAmI", number=number)
    assert output.writes == []
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert len(output.writes) == 1
    lines = output.writes[0].splitlines()
    assert [orjson.loads(line)["number"] for line in lines] == list(range(100))
    for number in range(700):  # more than LARGEST_WRITE: whole lines, in a few writes
        write(method="/keyhold.identity.v1.IdentityService/WhoAmI", number=number, pad="p" * 40)
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    chunks = output.writes[1:]
    assert 1 < len(chunks) < 5
    assert all(len(chunk) <= LARGEST_WRITE and chunk.endswith(b"\n") for chunk in chunks)


async def test_a_shared_output_gets_whole_line_writes_of_at_most_4_kib(
    shared_output: None, output: RecordingOutput
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
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in output.writes)
    lines = b"".join(output.writes).splitlines()
    assert [orjson.loads(line)["number"] for line in lines] == list(range(100))


def test_only_a_pipe_shared_with_other_processes_limits_writes_to_pipe_buf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as pipe, (tmp_path / "log").open("ab") as regular:
        outputs: dict[str, BinaryIO] = {"pipe": pipe, "file": regular, "no fd": io.BytesIO()}
        monkeypatch.setattr(log_config._Config, "shared", False)
        alone = {name: _write_limit(each) for name, each in outputs.items()}
        log_config.share_output()
        shared = {name: _write_limit(each) for name, each in outputs.items()}
    os.close(read_end)
    assert alone == {"pipe": LARGEST_WRITE, "file": LARGEST_WRITE, "no fd": LARGEST_WRITE}
    # Appends to one regular file do not interleave; writes to a pipe do, past PIPE_BUF.
    assert shared == {"pipe": PIPE_BUF, "file": LARGEST_WRITE, "no fd": PIPE_BUF}


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
