"""Starting a real Keyhold server in-process on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from keyhold.server import KeyholdServer, build_server
from keyhold.settings import Settings


def settings_for(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "data_dir": data_dir,
        "database_url": database_url,
        "migrate_on_start": True,
        "shutdown_grace_seconds": 1.0,
        "health_check_interval_seconds": 0.5,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_server(
    settings: Settings,
) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    app = await build_server(settings)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield app, channel
    finally:
        await channel.close()
        await app.stop(grace=0.5)
