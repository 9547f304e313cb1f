"""A file SQLite database keeps its connections: bursts of concurrent calls reuse the
pool instead of opening (a thread, the pragmas, a schema parse) and closing overflow
connections every time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from keyhold.settings import Settings
from tests.support.engines import engine_for


def _settings(data_dir: Path, pool_size: int) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        database_pool_size=pool_size,
        database_connect_timeout_seconds=0.3,
    )


async def test_bursts_reuse_the_pools_connections(tmp_path: Path) -> None:
    engine = engine_for(_settings(tmp_path, pool_size=3))
    opened: list[object] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _count(dbapi_connection: Any, _record: Any) -> None:
        opened.append(dbapi_connection)

    async def query() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)

    try:
        for _ in range(4):
            await asyncio.gather(*(query() for _ in range(12)))
    finally:
        await engine.dispose()
    assert len(opened) == 3


async def test_no_connection_beyond_the_pool_size(tmp_path: Path) -> None:
    engine = engine_for(_settings(tmp_path, pool_size=2))
    # Autocommit: two transactions at once would wait on each other for the write lock.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with autocommit.connect() as first, autocommit.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout):
                async with autocommit.connect():
                    pass
    finally:
        await engine.dispose()
