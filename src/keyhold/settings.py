"""Service configuration, read from `KEYHOLD_*` environment variables and `.env`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyhold.domain.provider.egress import EgressPolicy
from keyhold.grpc_transport import DEFAULT_TRANSPORT, GrpcTransport


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and 0 <= int(port) <= 65_535)


class Settings(BaseSettings):
    """Everything Keyhold can be configured with; validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="KEYHOLD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    listen_address: str = Field(
        "127.0.0.1:50051", description="host:port the gRPC server listens on"
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the server presents, its own certificate first; "
        "with tls_key_file, turns TLS on. Reread, with the key and client CA, when a file "
        "changes (checked at each new connection) or on SIGHUP",
    )
    tls_key_file: Path | None = Field(
        None, description="unencrypted PEM private key of the first certificate in tls_cert_file"
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA certificate(s); when set, every client must present a certificate "
        "issued by one of them (mutual TLS), and its names reach the policy layer",
    )
    allow_plaintext: bool = Field(
        False,
        description="serve without TLS on a non-loopback address (e.g. behind a mesh sidecar "
        "that terminates TLS). Without TLS and without this, the server serves only on "
        "127.0.0.0/8, ::1 or localhost and refuses to start otherwise",
    )
    tls_health_ca_file: Path | None = Field(
        None,
        description="`keyhold health` (TLS on when tls_cert_file is set): PEM CA "
        "certificate(s) to verify the server with; default: gRPC's bundled public roots",
    )
    tls_health_server_name: str | None = Field(
        None,
        description="`keyhold health`: the name to expect in the server's certificate "
        "(default: the probed host), e.g. when probing 127.0.0.1 with a certificate for a "
        "DNS name",
    )
    tls_health_client_cert_file: Path | None = Field(
        None,
        description="`keyhold health`: PEM client certificate it presents to a server that "
        "requires one (tls_client_ca_file), issued by that CA for client authentication; "
        "the server's own certificate serves only if it was issued so",
    )
    tls_health_client_key_file: Path | None = Field(
        None, description="`keyhold health`: PEM private key of tls_health_client_cert_file"
    )
    data_dir: Path = Field(
        Path(".keyhold"),
        description="directory for the embedded database and generated keys; created if missing",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL; default: SQLite file in data_dir. "
        "PostgreSQL: postgresql+asyncpg://user:password@host:5432/db",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="database connections kept open, no more are made; PostgreSQL's are "
        "shared by all the workers, and a worker with two or more keeps one for its audit "
        "appends",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes sharing the listen port (SO_REUSEPORT); more than "
        "one needs PostgreSQL",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the event loop `keyhold serve` runs on: uvloop (libuv, less server CPU "
        "per call: docs/benchmarks.md) or the standard library's asyncio",
    )
    grpc_transport: GrpcTransport = Field(
        DEFAULT_TRANSPORT,
        description="gRPC's socket transport in `keyhold serve`: posix, its epoll transport "
        "without EventEngine's threads, or event-engine, grpcio's default; "
        "GRPC_EXPERIMENTS, when set, is used instead",
    )
    database_connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    database_statement_timeout_seconds: float = Field(10.0, gt=0, le=600)
    migrate_on_start: bool | None = Field(
        None, description="apply migrations when serving; default: on for SQLite, off otherwise"
    )
    redis_url: SecretStr | None = Field(
        None, description="redis://host:port/db; when set, rate limits are shared across replicas"
    )
    rate_limits_enabled: bool = Field(True, description="enforce the rate limits in the proto")
    rate_limit_memory_entries: int = Field(
        200_000,
        ge=1_000,
        le=10_000_000,
        description="without Redis: the most the in-process rate-limit counters remember, "
        "one entry per key plus one per counted call; past it, the emptiest of a few "
        "random windows is forgotten (docs/operations.md, Memory ceilings)",
    )
    key_dir: Path | None = Field(
        None, description="directory holding key files; default: data_dir/keys"
    )
    key_encryption_keys: SecretStr | None = Field(
        None,
        description="comma-separated `id:base64(32 bytes)` AES-256 keys that encrypt private "
        "keys and credentials at rest; the last one encrypts. Default: a key file in key_dir",
    )
    issuer: str = Field("keyhold", description="JWT `iss` of the tokens this service issues")
    audience: str = Field("keyhold", description="JWT `aud` of the tokens this service issues")
    access_token_lifetime_seconds: int = Field(900, ge=60, le=86_400)
    token_leeway_seconds: int = Field(30, ge=0, le=300)
    client_assertion_max_seconds: int = Field(
        300, ge=30, le=3600, description="longest life of a client assertion (exp - iat)"
    )
    workload_token_max_seconds: int = Field(
        86_400,
        ge=600,
        le=7 * 86_400,
        description="longest life of a trusted issuer's token accepted as a credential",
    )
    token_exchange_max_depth: int = Field(
        2, ge=1, le=8, description="services an exchanged token may pass through (ExchangeToken)"
    )
    refresh_token_lifetime_seconds: int = Field(30 * 86_400, ge=3_600)
    session_idle_timeout_seconds: int = Field(7 * 86_400, ge=300)
    refresh_reuse_grace_seconds: float = Field(
        10.0,
        ge=0,
        le=60,
        description="a spent refresh token presented again within this many seconds of its "
        "use, while the pair it last got has not been used, is taken for a retry after a "
        "lost answer: it gets a fresh pair in the same session (the unused one is spent). "
        "Any other reuse revokes the session. 0: every reuse revokes",
    )
    refresh_reuse_grace_retries: int = Field(
        3,
        ge=1,
        le=10,
        description="how many such retries one refresh token gets within the grace window",
    )
    max_receive_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest request message"
    )
    max_metadata_bytes: int = Field(
        16 * 1024,
        ge=8 * 1024,
        le=1024 * 1024,
        description="largest request header list; larger ones are refused RESOURCE_EXHAUSTED",
    )
    connection_idle_seconds: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="a connection with no call under way for this long is closed (GOAWAY)",
    )
    connection_max_age_seconds: float = Field(
        3600.0,
        ge=10,
        le=7 * 86_400,
        description="every connection is closed (GOAWAY) after this long, so that clients "
        "reconnect and spread over the replicas",
    )
    connection_max_age_grace_seconds: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="calls under way on a connection that reached its maximum age get this "
        "long to finish (StreamAuditEvents then resumes on a new one)",
    )
    handshake_timeout_seconds: float = Field(
        10.0,
        ge=1,
        le=120,
        description="a connection that has not finished its TLS handshake (in plaintext: its "
        "connection setup) within this is closed",
    )
    max_concurrent_streams: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="calls at once on one connection, announced to the client; a client "
        "that opens more at once is refused some of them (UNAVAILABLE, REFUSED_STREAM)",
    )
    max_connections: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="connections one server process holds at once; one more is closed as "
        "soon as it is accepted (each worker counts its own)",
    )
    argon2_memory_kib: int = Field(
        19 * 1024, ge=7 * 1024, le=1024 * 1024, description="Argon2id memory (OWASP: 19 MiB)"
    )
    argon2_time_cost: int = Field(2, ge=1, le=20, description="Argon2id iterations")
    argon2_parallelism: int = Field(1, ge=1, le=16, description="Argon2id lanes")
    password_hash_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1),
        ge=1,
        le=64,
        description="threads hashing passwords (default: one core left for the event loop)",
    )
    self_signup: bool = Field(
        True,
        description="anyone may call CreateUser for themselves; off: administrators only",
    )
    lockout_threshold: int = Field(5, ge=1, le=100, description="failures per account+peer")
    lockout_peer_threshold: int = Field(20, ge=1, le=10_000, description="failures per peer")
    lockout_account_threshold: int = Field(
        20, ge=1, le=10_000, description="failures per account from all peers; then slowed"
    )
    lockout_account_interval_seconds: int = Field(
        30, ge=1, le=3600, description="past the account ceiling: one password check per this"
    )
    lockout_base_seconds: int = Field(60, ge=1, description="first cooldown; doubles after")
    lockout_max_seconds: int = Field(900, ge=1, description="longest cooldown")
    password_reset_token_lifetime_seconds: int = Field(3600, ge=60, le=86_400)
    email_verification_token_lifetime_seconds: int = Field(86_400, ge=300, le=30 * 86_400)
    session_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="how long a session's liveness is cached per process (and answered "
        "for as long again while one lookup refreshes it)",
    )
    provider_refresh_margin_seconds: int = Field(
        60, ge=0, le=3600, description="refresh upstream tokens expiring within this"
    )
    provider_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="deadline of each HTTP call to a provider, as a whole"
    )
    provider_retries: int = Field(2, ge=0, le=5, description="retries for network errors and 5xx")
    provider_breaker_threshold: int = Field(5, ge=1, le=100, description="failures to open")
    provider_breaker_cooldown_seconds: float = Field(30.0, gt=0, le=3600)
    provider_max_response_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="longest answer read from a provider; a longer one is cut off unread",
    )
    egress_allow: str = Field(
        "",
        description="comma-separated exceptions to the egress policy: CIDRs or addresses "
        "(reachable on port 443 although not public) and host[:port] (reachable whatever "
        "it resolves to, on that port, default 443)",
    )
    egress_allow_loopback_http: bool = Field(
        False,
        description="development and tests only: provider URLs may be plain http, on any "
        "port, to localhost or a loopback address",
    )
    egress_ca_file: Path | None = Field(
        None,
        description="PEM bundle of the CAs that outbound https (providers, trusted "
        "issuers' JWKS) is verified against instead of the public roots",
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=300)
    health_check_interval_seconds: float = Field(5.0, gt=0, le=300)
    audit_retention_days: int = Field(
        7 * 365 + 2, ge=365, description="`keyhold audit prune` deletes records older than this"
    )
    log_format: Literal["json", "console"] = Field(
        "console", description="json: one JSON object a line (production); console: for people"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="info logs one line per RPC"
    )
    http_address: str | None = Field(
        "127.0.0.1:8080",
        description="host:port of the OAuth 2.0 / OIDC endpoints over HTTP (discovery, "
        "JWKS, token, introspection, health), with the gRPC listener's TLS files; "
        "empty: none",
    )
    metrics_address: str | None = Field(
        None,
        description="host:port serving Prometheus metrics over HTTP, e.g. 127.0.0.1:9464; "
        "unset or empty: no metrics",
    )

    @field_validator("listen_address")
    @classmethod
    def _has_port(cls, value: str) -> str:
        if not _is_host_port(value):
            raise ValueError("must be host:port, e.g. 127.0.0.1:50051")
        return value

    @field_validator("metrics_address", "http_address")
    @classmethod
    def _optional_has_port(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not _is_host_port(value):
            raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("egress_allow")
    @classmethod
    def _egress_entries_parse(cls, value: str) -> str:
        EgressPolicy.from_entries(value.split(","), allow_loopback_http=False)
        return value

    @property
    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_entries(
            self.egress_allow.split(","), allow_loopback_http=self.egress_allow_loopback_http
        )

    @field_validator("database_url")
    @classmethod
    def _supported_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
            raise ValueError("must start with sqlite+aiosqlite: or postgresql+asyncpg:")
        return value

    @model_validator(mode="after")
    def _tls_files_pair_up(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        if (self.tls_health_client_cert_file is None) != (self.tls_health_client_key_file is None):
            raise ValueError(
                "tls_health_client_cert_file and tls_health_client_key_file go together"
            )
        return self

    @model_validator(mode="after")
    def _token_lifetimes_fit(self) -> Settings:
        if self.access_token_lifetime_seconds >= self.refresh_token_lifetime_seconds:
            raise ValueError("access tokens must expire before refresh tokens")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'keyhold.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def uses_data_dir(self) -> bool:
        """Whether anything lives in data_dir: the default database or key file."""
        return self.database_url is None or (
            self.key_dir is None and self.key_encryption_keys is None
        )

    @property
    def resolved_key_dir(self) -> Path:
        return self.key_dir or self.data_dir / "keys"

    @property
    def should_migrate_on_start(self) -> bool:
        return self.is_sqlite if self.migrate_on_start is None else self.migrate_on_start
