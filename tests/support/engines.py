"""Engines for tests, built from Settings the way the composition root builds them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.settings import Settings
from keyhold.wiring.platform import database_engine


def engine_for(settings: Settings) -> AsyncEngine:
    return database_engine(settings)
