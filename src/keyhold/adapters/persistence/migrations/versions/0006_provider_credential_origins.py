"""provider credentials bound to their token endpoint's origin; redirect URI allowlists

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Existing client secrets and connections are bound to the origin of their provider's
token endpoint as it stands (they were issued for it). Existing providers get an empty
redirect URI list, which refuses every StartConnection until an admin registers some.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _origin(url: str) -> str:
    # Frozen copy of keyhold.domain.provider.origins.origin_of as of this revision.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or {'https': 443, 'http': 80}.get(scheme, 0)}"


def upgrade() -> None:
    op.add_column(
        "providers", sa.Column("secret_origin", sa.String(2100), nullable=False, server_default="")
    )
    op.add_column(
        "providers", sa.Column("redirect_uris", sa.Text(), nullable=False, server_default="[]")
    )
    op.add_column(
        "connections",
        sa.Column("credential_origin", sa.String(2100), nullable=False, server_default=""),
    )
    bind = op.get_bind()
    providers = sa.table(
        "providers",
        sa.column("slug", sa.String),
        sa.column("auth_type", sa.String),
        sa.column("token_endpoint", sa.String),
        sa.column("secret_ciphertext", sa.LargeBinary),
        sa.column("secret_origin", sa.String),
    )
    connections = sa.table(
        "connections", sa.column("provider", sa.String), sa.column("credential_origin", sa.String)
    )
    rows = bind.execute(
        sa.select(
            providers.c.slug, providers.c.token_endpoint, providers.c.secret_ciphertext
        ).where(providers.c.auth_type == "oauth2")
    ).all()
    for slug, token_endpoint, secret in rows:
        origin = _origin(token_endpoint)
        if secret is not None:
            bind.execute(
                providers.update().where(providers.c.slug == slug).values(secret_origin=origin)
            )
        bind.execute(
            connections.update()
            .where(connections.c.provider == slug)
            .values(credential_origin=origin)
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("credential_origin")
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("redirect_uris")
        batch.drop_column("secret_origin")
