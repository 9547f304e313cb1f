"""The in-memory database the fakes share: committed rows per table, and a
transaction's writes over them until it commits.

Rows are immutable values; a write replaces a row, so a transaction that is discarded
leaves nothing behind. Writes are kept per row and applied at commit, so two
transactions that wrote different rows both keep their writes, as on SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from keyhold.domain.errors import Unavailable
from keyhold.domain.identity.one_time_tokens import TokenPurpose
from keyhold.domain.identity.service_accounts import ServiceAccount
from keyhold.domain.identity.sessions import Session
from keyhold.domain.identity.users import User
from keyhold.domain.provider.connections import Connection, Credentials, PendingAuthorization
from keyhold.domain.provider.providers import Provider
from keyhold.domain.signing_keys import SigningKey

K = TypeVar("K")
V = TypeVar("V")


class IntegrityViolation(Exception):
    """A write the SQL schema refuses and the SQL adapter does not translate (a foreign
    key to nothing, a duplicate primary key): a bug in the caller."""


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    session_id: str
    created_at: datetime
    spent_at: datetime | None = None
    successor_hash: bytes | None = None  # the live successor its use (or last retry) issued
    grace_retries: int = 0


@dataclass(frozen=True, slots=True)
class OneTimeTokenRow:
    user_id: str
    purpose: TokenPurpose
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderRow:
    provider: Provider
    secret_ciphertext: bytes | None
    secret_key_id: str


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    connection: Connection
    pending: PendingAuthorization | None  # while an authorization may complete
    credentials: Credentials  # empty fields where nothing is stored


@dataclass
class Tables:
    """The committed rows, by primary key."""

    users: dict[str, User] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    refresh_tokens: dict[bytes, RefreshTokenRow] = field(default_factory=dict)
    one_time_tokens: dict[bytes, OneTimeTokenRow] = field(default_factory=dict)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    signing_keys: dict[str, SigningKey] = field(default_factory=dict)
    providers: dict[str, ProviderRow] = field(default_factory=dict)
    connections: dict[str, ConnectionRow] = field(default_factory=dict)


class TableView(Generic[K, V]):
    """One table as a transaction sees it: its own writes over the committed rows."""

    def __init__(self, committed: dict[K, V]) -> None:
        self._committed = committed
        self._written: dict[K, V | None] = {}  # None: deleted

    def get(self, key: K) -> V | None:
        if key in self._written:
            return self._written[key]
        return self._committed.get(key)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def items(self) -> Iterator[tuple[K, V]]:
        for key in {**self._committed, **self._written}:
            value = self.get(key)
            if value is not None:
                yield key, value

    def values(self) -> Iterator[V]:
        return (value for _, value in self.items())

    def where(self, test: Callable[[V], bool]) -> list[tuple[K, V]]:
        return [(key, value) for key, value in self.items() if test(value)]

    def insert(self, key: K, value: V) -> None:
        if key in self:
            raise IntegrityViolation(f"duplicate key {key!r}")
        self._written[key] = value

    def put(self, key: K, value: V) -> None:
        self._written[key] = value

    def delete(self, key: K) -> bool:
        if key not in self:
            return False
        self._written[key] = None
        return True

    def commit(self) -> None:
        for key, value in self._written.items():
            if value is None:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self._written.clear()


class Transaction:
    """Every table, as one transaction sees it."""

    def __init__(self, tables: Tables) -> None:
        self.users = TableView(tables.users)
        self.sessions = TableView(tables.sessions)
        self.refresh_tokens = TableView(tables.refresh_tokens)
        self.one_time_tokens = TableView(tables.one_time_tokens)
        self.service_accounts = TableView(tables.service_accounts)
        self.signing_keys = TableView(tables.signing_keys)
        self.providers = TableView(tables.providers)
        self.connections = TableView(tables.connections)

    def commit(self) -> None:
        for commit in (
            self.users.commit,
            self.sessions.commit,
            self.refresh_tokens.commit,
            self.one_time_tokens.commit,
            self.service_accounts.commit,
            self.signing_keys.commit,
            self.providers.commit,
            self.connections.commit,
        ):
            commit()


class InMemoryStore:
    """The database: `tables` holds what is committed. While `unavailable` is set, no
    transaction begins (UNAVAILABLE, as when the database cannot be reached)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.unavailable = False
        self.commits = 0
        self.rollbacks = 0

    def begin(self) -> Transaction:
        if self.unavailable:
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry later")
        return Transaction(self.tables)

    def commit(self, transaction: Transaction) -> None:
        transaction.commit()
        self.commits += 1

    def roll_back(self, transaction: Transaction) -> None:
        """Nothing to undo: the transaction's writes were never applied."""
        self.rollbacks += 1


def after_cursor(
    rows: list[V], key: Callable[[V], tuple[datetime, str]], after: tuple[str, str] | None
) -> list[V]:
    """Rows in ascending (created_at, id) order past the (created_at ISO, id) cursor."""
    ordered = sorted(rows, key=key)
    if after is None:
        return ordered
    cursor = (datetime.fromisoformat(after[0]), after[1])
    return [row for row in ordered if key(row) > cursor]


def before_cursor(
    rows: list[V], key: Callable[[V], tuple[datetime, str]], before: tuple[str, str] | None
) -> list[V]:
    """Rows in descending (created_at, id) order past the (created_at ISO, id) cursor."""
    ordered = sorted(rows, key=key, reverse=True)
    if before is None:
        return ordered
    cursor = (datetime.fromisoformat(before[0]), before[1])
    return [row for row in ordered if key(row) < cursor]
