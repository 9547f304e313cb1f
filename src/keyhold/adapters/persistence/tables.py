"""The schema, as SQLAlchemy Core tables. Alembic migrations create it; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from keyhold.adapters.persistence.types import UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("private_key_ciphertext", LargeBinary, nullable=False),
    Column("encryption_key_id", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime, nullable=True),
    Index("ix_signing_keys_retired_at", "retired_at"),
)

# The sequence and one column per AuditRecord field, all covered by the hash chain
# (domain.audit.chain.CHAINED_FIELDS), then what the chain stores about itself.
audit_events = Table(
    "audit_events",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("attempt_id", String(32), nullable=False),
    Column("time", UtcDateTime, nullable=False),
    Column("actor_type", String(16), nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_name", String(256), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("trace_id", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("details", Text, nullable=False),
    Column("canonical", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Index("ix_audit_events_actor_id_sequence", "actor_id", "sequence"),
    Index("ix_audit_events_action_sequence", "action", "sequence"),
    Index("ix_audit_events_resource_name_sequence", "resource_name", "sequence"),
    Index("ix_audit_events_outcome_sequence", "outcome", "sequence"),
    Index("ix_audit_events_attempt_id", "attempt_id"),
    Index("ix_audit_events_time", "time"),
)

# One row: records older than `prune_before` may be deleted (retention); the
# append-only triggers refuse every other UPDATE and DELETE on audit_events.
audit_retention = Table(
    "audit_retention",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("prune_before", UtcDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("email_verified", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("roles", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_users_created_at_id", "created_at", "id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("idle_expires_at", UtcDateTime, nullable=False),
    Column("last_refresh_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revoke_reason", String(32), nullable=False),
    Index("ix_sessions_user_id_created_at", "user_id", "created_at"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("spent_at", UtcDateTime, nullable=True),
    # The live successor this token's use (or its last retry within the grace window)
    # issued, and how many retries it had; NULL for a token spent by a retry.
    Column("successor_hash", LargeBinary, nullable=True),
    Column("grace_retries", Integer, nullable=False, server_default="0"),
    Index("ix_refresh_tokens_session_id", "session_id"),
)

one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Index("ix_one_time_tokens_user_id", "user_id"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(64), primary_key=True),  # SHA-256 hex of the counted key
    Column("failures", Integer, nullable=False),
    Column("locked_until", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("refuses_secrets", Boolean, nullable=False, server_default=false()),
    Index("ix_service_accounts_created_at_id", "created_at", "id"),
)

# API resources (migration 0009). The built-in `keyhold` row has no audience stored (it
# is the configured one) and no scope or role rows (they are defined in code); users'
# and service accounts' grants on it stay in `users.roles` and `service_accounts.scopes`.
api_resources = Table(
    "api_resources",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("audience", String(256), nullable=True, unique=True),
    Column("display_name", String(128), nullable=False),
    Column("built_in", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

api_resource_scopes = Table(
    "api_resource_scopes",
    metadata,
    Column(
        "resource_id",
        String(63),
        ForeignKey("api_resources.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column("description", String(256), nullable=False),
)

api_resource_roles = Table(
    "api_resource_roles",
    metadata,
    Column(
        "resource_id",
        String(63),
        ForeignKey("api_resources.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(64), primary_key=True),
)

# A scope removed from its resource leaves every role and grant through these keys.
api_resource_role_scopes = Table(
    "api_resource_role_scopes",
    metadata,
    Column("resource_id", String(63), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("scope", String(128), primary_key=True),
    ForeignKeyConstraint(
        ["resource_id", "role"],
        ["api_resource_roles.resource_id", "api_resource_roles.name"],
        ondelete="CASCADE",
    ),
    ForeignKeyConstraint(
        ["resource_id", "scope"],
        ["api_resource_scopes.resource_id", "api_resource_scopes.name"],
        ondelete="CASCADE",
    ),
)

service_account_scope_grants = Table(
    "service_account_scope_grants",
    metadata,
    Column(
        "account_id",
        String(64),
        ForeignKey("service_accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("resource_id", String(63), primary_key=True),
    Column("scope", String(128), primary_key=True),
    ForeignKeyConstraint(
        ["resource_id", "scope"],
        ["api_resource_scopes.resource_id", "api_resource_scopes.name"],
        ondelete="CASCADE",
    ),
    Index("ix_service_account_scope_grants_resource_id", "resource_id"),
)

user_role_grants = Table(
    "user_role_grants",
    metadata,
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("resource_id", String(63), primary_key=True),
    Column("role", String(64), primary_key=True),
    ForeignKeyConstraint(
        ["resource_id", "role"],
        ["api_resource_roles.resource_id", "api_resource_roles.name"],
        ondelete="CASCADE",
    ),
    Index("ix_user_role_grants_resource_id", "resource_id"),
)

token_exchange_grants = Table(
    "token_exchange_grants",
    metadata,
    Column(
        "account_id",
        String(64),
        ForeignKey("service_accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("resource_id", String(63), primary_key=True),
    Column("scope", String(128), primary_key=True),
    ForeignKeyConstraint(
        ["resource_id", "scope"],
        ["api_resource_scopes.resource_id", "api_resource_scopes.name"],
        ondelete="CASCADE",
    ),
    Index("ix_token_exchange_grants_resource_id", "resource_id"),
)

service_account_keys = Table(
    "service_account_keys",
    metadata,
    Column(
        "account_id",
        String(64),
        ForeignKey("service_accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key_id", String(128), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

trusted_issuers = Table(
    "trusted_issuers",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("issuer", String(512), nullable=False, unique=True),
    Column("jwks_url", String(2048), nullable=False),
    Column("jwks_json", Text, nullable=False),
    Column("audience", String(256), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

workload_identities = Table(
    "workload_identities",
    metadata,
    Column(
        "issuer_id",
        String(63),
        ForeignKey("trusted_issuers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("subject_pattern", String(512), primary_key=True),
    Column(
        "account_id",
        String(64),
        ForeignKey("service_accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
)

# Client assertions and workload tokens seen, until they expire: one never counts twice.
assertion_replays = Table(
    "assertion_replays",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_assertion_replays_expires_at", "expires_at"),
)

providers = Table(
    "providers",
    metadata,
    Column("slug", String(63), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("auth_type", String(16), nullable=False),
    Column("authorization_endpoint", String(2048), nullable=False),
    Column("token_endpoint", String(2048), nullable=False),
    Column("revocation_endpoint", String(2048), nullable=False),
    Column("client_id", String(256), nullable=False),
    Column("default_scopes", Text, nullable=False),
    Column("secret_ciphertext", LargeBinary, nullable=True),
    Column("secret_key_id", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The origin (scheme://host:port) of the token endpoint the secret was issued for.
    Column("secret_origin", String(2100), nullable=False, server_default=""),
    Column("redirect_uris", Text, nullable=False, server_default="[]"),
)

connections = Table(
    "connections",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(63), ForeignKey("providers.slug"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_refresh_at", UtcDateTime, nullable=True),
    # The pending OAuth authorization (PENDING connections only).
    Column("state_hash", LargeBinary, nullable=True, unique=True),
    Column("verifier_ciphertext", LargeBinary, nullable=True),
    Column("redirect_uri", String(2048), nullable=False),
    Column("authorize_expires_at", UtcDateTime, nullable=True),
    # Upstream credentials, sealed with the key `credential_key_id`.
    Column("access_token_ciphertext", LargeBinary, nullable=True),
    Column("refresh_token_ciphertext", LargeBinary, nullable=True),
    Column("api_key_ciphertext", LargeBinary, nullable=True),
    Column("credential_key_id", String(32), nullable=False),
    # The origin of the token endpoint the authorization and tokens belong to.
    Column("credential_origin", String(2100), nullable=False, server_default=""),
    Index("ix_connections_user_id_created_at", "user_id", "created_at"),
    Index("ix_connections_provider", "provider"),
)
