"""Database errors carry the statement but never its values: they end up in logged
tracebacks, and the values are emails, hashes and sealed credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.support.databases import postgres_database
from tests.support.engines import engine_for
from tests.support.servers import settings_for

VALUE = "ada@example.com-sealed-credential"


async def _duplicate_insert_error(tmp_path: Path, url: str | None) -> str:
    engine = engine_for(settings_for(tmp_path, url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TABLE probe (x TEXT UNIQUE)"))
            await connection.execute(text("INSERT INTO probe VALUES (:x)"), {"x": VALUE})
            with pytest.raises(IntegrityError) as caught:
                await connection.execute(text("INSERT INTO probe VALUES (:x)"), {"x": VALUE})
    finally:
        await engine.dispose()
    return str(caught.value)


async def test_a_failed_sqlite_statement_does_not_show_its_values(tmp_path: Path) -> None:
    message = await _duplicate_insert_error(tmp_path, None)
    assert "INSERT INTO probe" in message
    assert VALUE not in message


@pytest.mark.postgres
async def test_a_failed_postgres_statement_does_not_show_its_values(tmp_path: Path) -> None:
    async with postgres_database() as url:
        message = await _duplicate_insert_error(tmp_path, url)
    assert "INSERT INTO probe" in message
    assert VALUE not in message
