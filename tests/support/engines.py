"""Engines for tests, built from Settings the way the composition root builds them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.adapters.persistence.engine import create_engine
from keyhold.settings import Settings


def engine_for(settings: Settings) -> AsyncEngine:
    return create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
        private_data_dir=settings.data_dir if settings.uses_data_dir else None,
    )
