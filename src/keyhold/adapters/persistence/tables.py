"""The schema, as SQLAlchemy Core tables. Alembic migrations create it; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
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
    Index("ix_service_accounts_created_at_id", "created_at", "id"),
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
