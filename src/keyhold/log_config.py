"""structlog set-up: JSON lines in production, readable console lines in development.

JSON is serialized by orjson straight to bytes: at one line per RPC, the renderer is most
of a log call's cost, and orjson takes about half of it off (docs/benchmarks.md).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Literal

import orjson
import structlog


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
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer if output is None else output)
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
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=cache_loggers,
    )
