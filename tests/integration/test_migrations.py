"""Migrations apply on both engines, are idempotent, and match the table definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from keyhold.adapters.persistence.migrate import current_revision, head_revision, migrate
from keyhold.adapters.persistence.tables import metadata


async def _check(url: str) -> None:
    engine = create_async_engine(url)
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        await migrate(engine)  # a second run is a no-op
        assert await current_revision(engine) == head_revision() is not None
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = {
                table: await connection.run_sync(
                    lambda c, t=table: {col["name"] for col in inspect(c).get_columns(t)}
                )
                for table in metadata.tables
            }
        assert set(metadata.tables) <= tables
        for name, table in metadata.tables.items():
            assert columns[name] == {c.name for c in table.columns}, name
    finally:
        await engine.dispose()


async def test_migrations_on_sqlite(tmp_path: Path) -> None:
    await _check(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
async def test_migrations_on_postgresql(postgres_url: str) -> None:
    await _check(postgres_url)
