"""JSON log lines leave in batches: whole lines, at most FLUSH_AFTER_SECONDS late, in
order, and no larger than a pipe shared by several workers keeps in one piece."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
import structlog

from keyhold import log_output
from keyhold.log_config import configure_logging
from keyhold.log_output import (
    FLUSH_AFTER_SECONDS,
    LARGEST_WRITE,
    PIPE_BUF,
    BatchedLineLogger,
    flush_lines,
    write_limit,
)

WHOAMI = "/keyhold.identity.v1.IdentityService/WhoAmI"


class RecordingOutput(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().write(data)


def _line(number: int, pad: str = "") -> bytes:
    return orjson.dumps({"event": "rpc_completed", "method": WHOAMI, "n": number, "pad": pad})


def _numbers(writes: list[bytes]) -> list[int]:
    return [orjson.loads(line)["n"] for line in b"".join(writes).splitlines()]


@pytest.fixture
def output() -> RecordingOutput:
    return RecordingOutput()


@pytest.fixture
def shared_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as one of several workers writing to the same output."""
    monkeypatch.setattr(log_output._Sharing, "shared", False)
    log_output.share_output()


async def test_lines_logged_on_a_loop_leave_together(output: RecordingOutput) -> None:
    lines = BatchedLineLogger(output)
    for number in range(100):
        lines.info(_line(number))
    assert output.writes == []
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert len(output.writes) == 1
    assert _numbers(output.writes) == list(range(100))
    for number in range(700):  # more than LARGEST_WRITE: whole lines, in a few writes
        lines.info(_line(number, pad="p" * 40))
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    chunks = output.writes[1:]
    assert 1 < len(chunks) < 5
    assert all(len(chunk) <= LARGEST_WRITE and chunk.endswith(b"\n") for chunk in chunks)
    assert _numbers(chunks) == list(range(700))


@pytest.mark.usefixtures("shared_output")
async def test_a_shared_pipe_gets_whole_line_writes_of_at_most_pipe_buf(
    output: RecordingOutput,
) -> None:
    lines = BatchedLineLogger(output)
    for number in range(100):
        lines.info(_line(number))
        if number % 10 == 0:
            await asyncio.sleep(0)  # later loop iterations, within the flush interval
    assert output.writes == []
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert 1 < len(output.writes) < 100
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in output.writes)
    assert _numbers(output.writes) == list(range(100))


def test_only_a_pipe_shared_with_other_processes_limits_writes_to_pipe_buf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as pipe, (tmp_path / "log").open("ab") as regular:
        outputs: dict[str, BinaryIO] = {"pipe": pipe, "file": regular, "no fd": io.BytesIO()}
        monkeypatch.setattr(log_output._Sharing, "shared", False)
        alone = {name: write_limit(each) for name, each in outputs.items()}
        log_output.share_output()
        shared = {name: write_limit(each) for name, each in outputs.items()}
    os.close(read_end)
    assert alone == {"pipe": LARGEST_WRITE, "file": LARGEST_WRITE, "no fd": LARGEST_WRITE}
    # Appends to one regular file do not interleave; writes to a pipe do, past PIPE_BUF.
    assert shared == {"pipe": PIPE_BUF, "file": LARGEST_WRITE, "no fd": PIPE_BUF}


async def test_flush_lines_writes_what_waits(output: RecordingOutput) -> None:
    lines = BatchedLineLogger(output)
    lines.info(_line(7))
    assert output.writes == []
    flush_lines()  # as the server does when it stops
    assert _numbers(output.writes) == [7]


async def test_a_line_logged_off_the_loop_is_written_at_once_after_those_waiting(
    output: RecordingOutput,
) -> None:
    lines = BatchedLineLogger(output)
    lines.info(_line(0))
    await asyncio.to_thread(lines.info, _line(1))  # another thread: no running loop
    assert _numbers(output.writes) == [0, 1]


def test_lines_a_finished_loop_left_waiting_go_before_the_next(
    output: RecordingOutput,
) -> None:
    lines = BatchedLineLogger(output)

    async def log_and_finish() -> None:
        lines.info(_line(0))

    asyncio.run(log_and_finish())  # the loop closes before its flush timer is due
    assert output.writes == []
    asyncio.run(log_and_finish())
    lines.info(_line(1))
    assert _numbers(output.writes) == [0, 0, 1]


async def test_a_forked_child_does_not_write_its_parents_waiting_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("ab") as output:
        lines = BatchedLineLogger(output)
        lines.info(_line(0))
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            flush_lines()
            os._exit(0)
        _, status = await asyncio.to_thread(os.waitpid, child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        flush_lines()
    assert _numbers([path.read_bytes()]) == [0]


@pytest.fixture
def configured(output: RecordingOutput) -> Iterator[RecordingOutput]:
    configure_logging("json", "info", output=output, cache_loggers=False)
    try:
        yield output
    finally:
        structlog.reset_defaults()


async def test_structlog_writes_json_lines_through_the_batches(
    configured: RecordingOutput,
) -> None:
    log = structlog.get_logger("x")
    log.info("first", n=0)
    log.warning("second", n=1)
    assert configured.writes == []
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 2)
    assert len(configured.writes) == 1
    assert [orjson.loads(line)["level"] for line in configured.writes[0].splitlines()] == [
        "info",
        "warning",
    ]


async def test_lines_waiting_for_an_output_since_closed_are_dropped(
    output: RecordingOutput,
) -> None:
    """Whoever opened the output closed it (a test's log file): flushing every logger,
    as the server does when it stops, must not fail on this one."""
    lines = BatchedLineLogger(output)
    lines.info(_line(0))
    output.close()
    flush_lines()
    assert output.writes == []
