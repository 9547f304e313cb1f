"""structlog set-up: JSON lines in production, readable console lines in development.

Every line, the per-RPC one included, goes through the one processor chain configured
here. JSON is rendered by orjson straight to bytes and written in batches
(`keyhold.log_output`).
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, BinaryIO, Literal

import orjson
import structlog

from keyhold.log_output import BatchedLineLoggerFactory


class _UtcTimestamp:
    """`2026-11-22T01:55:03.123456Z`, as structlog's ISO/UTC stamper writes it, with the
    seconds formatted once per second rather than through a datetime per line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = second
        return self._prefix + str(micro + 1_000_000)[1:] + "Z"  # six digits, no format spec


utc_timestamp = _UtcTimestamp()


def _add_timestamp(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = utc_timestamp()
    return event_dict


def configure_logging(
    log_format: Literal["json", "console"],
    level: str = "info",
    *,
    output: BinaryIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """Log to `output` (default: standard error). `cache_loggers=False` lets a later
    `configure_logging` reach loggers already used (tests)."""
    renderer: structlog.typing.Processor
    factory: Callable[..., Any]
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = BatchedLineLoggerFactory(sys.stderr.buffer if output is None else output)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        text = (
            sys.stderr
            if output is None
            else io.TextIOWrapper(output, encoding="utf-8", write_through=True)
        )
        factory = structlog.PrintLoggerFactory(text)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=cache_loggers,
    )
