"""provider catalog and connections

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyhold.adapters.persistence.types import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("auth_type", sa.String(16), nullable=False),
        sa.Column("authorization_endpoint", sa.String(2048), nullable=False),
        sa.Column("token_endpoint", sa.String(2048), nullable=False),
        sa.Column("revocation_endpoint", sa.String(2048), nullable=False),
        sa.Column("client_id", sa.String(256), nullable=False),
        sa.Column("default_scopes", sa.Text(), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("secret_key_id", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slug", name="pk_providers"),
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("last_refresh_at", UtcDateTime(), nullable=True),
        sa.Column("state_hash", sa.LargeBinary(), nullable=True),
        sa.Column("verifier_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("authorize_expires_at", UtcDateTime(), nullable=True),
        sa.Column("access_token_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("refresh_token_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("api_key_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("credential_key_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        sa.UniqueConstraint("state_hash", name="uq_connections_state_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_connections_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["provider"], ["providers.slug"], name="fk_connections_provider_providers"
        ),
    )
    op.create_index("ix_connections_user_id_created_at", "connections", ["user_id", "created_at"])
    op.create_index("ix_connections_provider", "connections", ["provider"])


def downgrade() -> None:
    op.drop_table("connections")
    op.drop_table("providers")
