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
        # The cheapest Argon2id the settings allow: tests log in a lot.
        "argon2_memory_kib": 7 * 1024,
        "argon2_time_cost": 1,
        # The fake OAuth provider (tests/support/oauth_provider.py) serves plain HTTP on
        # 127.0.0.1: allowed as in development. Egress tests pass False to get production's.
        "egress_allow_loopback_http": True,
        # No HTTP listener unless a test asks for one (`http_address="127.0.0.1:0"`).
        "http_address": None,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_server(
    settings: Settings,
    channel_credentials: grpc.ChannelCredentials | None = None,
    **build_options: Any,
) -> AsyncIterator[tuple[KeyholdServer, grpc.aio.Channel]]:
    """The server and a channel to it: plaintext, or secured with `channel_credentials`;
    `build_options` go to `build_server` (e.g. `tracer_provider`)."""
    app = await build_server(settings, **build_options)
    port = await app.start()
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if channel_credentials is None
        else grpc.aio.secure_channel(target, channel_credentials)
    )
    try:
        yield app, channel
    finally:
        await channel.close()
        await app.stop(grace=0.5)


PASSWORD = "correct horse battery staple"


async def signed_in(
    app: KeyholdServer, email: str = "user@example.com", roles: tuple[str, ...] = ("user",)
) -> tuple[str, str]:
    """Register a user through the use cases and log in: (access token, user name)."""
    user = await app.identity.users.create(email, PASSWORD, "Test User", roles=frozenset(roles))
    result = await app.identity.sessions.login(email, PASSWORD, "tests")
    return result.access_token.token, user.name


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def service_token(app: KeyholdServer, scopes: tuple[str, ...], name: str = "svc") -> str:
    """Create a service account with `scopes` and take a token by client credentials."""
    account, secret = await app.identity.service_accounts.create(name, list(scopes))
    issued = await app.identity.service_accounts.issue_token(account.client_id, secret, [])
    return issued.token.token
