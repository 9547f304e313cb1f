"""Throwaway databases: a SQLite file per test, or a fresh PostgreSQL database per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

ADMIN_DSN = os.environ.get(
    "KEYHOLD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
).replace("postgresql+asyncpg://", "postgresql://")


def _unreachable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI and is unreachable: {reason}")
    pytest.skip(f"PostgreSQL unreachable: {reason}")


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _unreachable(str(exc))
        raise


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"keyhold_test_{secrets.token_hex(6)}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}"
    finally:
        admin = await _admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
