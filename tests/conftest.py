from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.servers import running_server, settings_for


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    """A Keyhold server on the embedded SQLite database, and a channel to it."""
    async with running_server(settings_for(tmp_path)) as started:
        yield started


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def any_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    """A Keyhold server on each supported database in turn."""
    if request.param == "sqlite":
        async with running_server(settings_for(tmp_path)) as started:
            yield started
    else:
        async with (
            postgres_database() as url,
            running_server(settings_for(tmp_path, url)) as started,
        ):
            yield started
