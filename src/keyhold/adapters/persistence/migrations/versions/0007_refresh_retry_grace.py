"""refresh tokens remember their last successor and retries, for the grace window

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Tokens spent before this revision have no successor on record: presented again, they
are reuse, as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("successor_hash", sa.LargeBinary(), nullable=True))
    op.add_column(
        "refresh_tokens",
        sa.Column("grace_retries", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("grace_retries")
        batch.drop_column("successor_hash")
