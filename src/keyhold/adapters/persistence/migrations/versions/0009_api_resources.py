"""API resources, their scopes and roles, grants, and keyless workload identity

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

The built-in resource `keyhold` is a row without an audience (it is the configured
one) and without scope or role rows (they are defined in code). Grants on it stay
where they are: `users.roles` and `service_accounts.scopes`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from keyhold.adapters.persistence.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _cascade(
    owner: str, columns: list[str], table: str, referred: list[str]
) -> sa.ForeignKeyConstraint:
    """A foreign key of `owner` deleted with what it refers to, named as `tables` does."""
    return sa.ForeignKeyConstraint(
        columns,
        [f"{table}.{column}" for column in referred],
        name=f"fk_{owner}_{columns[0]}_{table}",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.add_column(
            sa.Column("refuses_secrets", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    resources = op.create_table(
        "api_resources",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("audience", sa.String(256), nullable=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("built_in", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_resources"),
        sa.UniqueConstraint("audience", name="uq_api_resources_audience"),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        resources,
        [
            {
                "id": "keyhold",
                "audience": None,
                "display_name": "Keyhold",
                "built_in": True,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    op.create_table(
        "api_resource_scopes",
        sa.Column("resource_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "name", name="pk_api_resource_scopes"),
        _cascade("api_resource_scopes", ["resource_id"], "api_resources", ["id"]),
    )
    op.create_table(
        "api_resource_roles",
        sa.Column("resource_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "name", name="pk_api_resource_roles"),
        _cascade("api_resource_roles", ["resource_id"], "api_resources", ["id"]),
    )
    op.create_table(
        "api_resource_role_scopes",
        sa.Column("resource_id", sa.String(63), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "role", "scope", name="pk_api_resource_role_scopes"),
        _cascade(
            "api_resource_role_scopes",
            ["resource_id", "role"],
            "api_resource_roles",
            ["resource_id", "name"],
        ),
        _cascade(
            "api_resource_role_scopes",
            ["resource_id", "scope"],
            "api_resource_scopes",
            ["resource_id", "name"],
        ),
    )
    for table, holder, holders in (
        ("service_account_scope_grants", "account_id", "service_accounts"),
        ("token_exchange_grants", "account_id", "service_accounts"),
    ):
        op.create_table(
            table,
            sa.Column(holder, sa.String(64), nullable=False),
            sa.Column("resource_id", sa.String(63), nullable=False),
            sa.Column("scope", sa.String(128), nullable=False),
            sa.PrimaryKeyConstraint(holder, "resource_id", "scope", name=f"pk_{table}"),
            _cascade(table, [holder], holders, ["id"]),
            _cascade(
                table, ["resource_id", "scope"], "api_resource_scopes", ["resource_id", "name"]
            ),
        )
        op.create_index(f"ix_{table}_resource_id", table, ["resource_id"])
    op.create_table(
        "user_role_grants",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(63), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "resource_id", "role", name="pk_user_role_grants"),
        _cascade("user_role_grants", ["user_id"], "users", ["id"]),
        _cascade(
            "user_role_grants",
            ["resource_id", "role"],
            "api_resource_roles",
            ["resource_id", "name"],
        ),
    )
    op.create_index("ix_user_role_grants_resource_id", "user_role_grants", ["resource_id"])
    op.create_table(
        "service_account_keys",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key_id", name="pk_service_account_keys"),
        _cascade("service_account_keys", ["account_id"], "service_accounts", ["id"]),
    )
    op.create_table(
        "trusted_issuers",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("jwks_url", sa.String(2048), nullable=False),
        sa.Column("jwks_json", sa.Text(), nullable=False),
        sa.Column("audience", sa.String(256), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trusted_issuers"),
        sa.UniqueConstraint("issuer", name="uq_trusted_issuers_issuer"),
    )
    op.create_table(
        "workload_identities",
        sa.Column("issuer_id", sa.String(63), nullable=False),
        sa.Column("subject_pattern", sa.String(512), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("issuer_id", "subject_pattern", name="pk_workload_identities"),
        _cascade("workload_identities", ["issuer_id"], "trusted_issuers", ["id"]),
        _cascade("workload_identities", ["account_id"], "service_accounts", ["id"]),
    )
    op.create_table(
        "assertion_replays",
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name="pk_assertion_replays"),
    )
    op.create_index("ix_assertion_replays_expires_at", "assertion_replays", ["expires_at"])


def downgrade() -> None:
    for table in (
        "assertion_replays",
        "workload_identities",
        "trusted_issuers",
        "service_account_keys",
        "user_role_grants",
        "token_exchange_grants",
        "service_account_scope_grants",
        "api_resource_role_scopes",
        "api_resource_roles",
        "api_resource_scopes",
        "api_resources",
    ):
        op.drop_table(table)
    with op.batch_alter_table("service_accounts") as batch:
        batch.drop_column("refuses_secrets")
