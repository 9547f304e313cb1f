"""The unit of work on SQL: one transaction over every repository, or none when the
caller does not need the block to be atomic."""

from __future__ import annotations

import contextlib
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from keyhold.adapters.persistence.database import (
    Database,
    complete_absorbing_cancellation,
    is_connection_failure,
)
from keyhold.adapters.persistence.identity.account_keys import SqlAccountKeyRepository
from keyhold.adapters.persistence.identity.api_resources import SqlApiResourceRepository
from keyhold.adapters.persistence.identity.grants import SqlGrantRepository
from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailures
from keyhold.adapters.persistence.identity.one_time_tokens import SqlOneTimeTokenRepository
from keyhold.adapters.persistence.identity.service_accounts import SqlServiceAccountRepository
from keyhold.adapters.persistence.identity.sessions import SqlSessionRepository
from keyhold.adapters.persistence.identity.signing_keys import SqlSigningKeyRepository
from keyhold.adapters.persistence.identity.trusted_issuers import SqlTrustedIssuerRepository
from keyhold.adapters.persistence.identity.users import SqlUserRepository
from keyhold.adapters.persistence.provider.connections import SqlConnectionRepository
from keyhold.adapters.persistence.provider.providers import SqlProviderRepository
from keyhold.domain.sealing import Sealer


class SqlUnitOfWork:
    """One transaction; commits when the block ends cleanly, rolls back otherwise."""

    signing_keys: SqlSigningKeyRepository
    users: SqlUserRepository
    sessions: SqlSessionRepository
    one_time_tokens: SqlOneTimeTokenRepository
    service_accounts: SqlServiceAccountRepository
    providers: SqlProviderRepository
    connections: SqlConnectionRepository
    login_failures: SqlLoginFailures
    api_resources: SqlApiResourceRepository
    grants: SqlGrantRepository
    account_keys: SqlAccountKeyRepository
    trusted_issuers: SqlTrustedIssuerRepository

    def __init__(self, database: Database, sealer: Sealer, *, atomic: bool = True) -> None:
        self._database = database
        self._sealer = sealer
        self._in_transaction = atomic
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

    @property
    def connection(self) -> AsyncConnection:
        assert self._connection is not None, "unit of work used outside `async with`"
        return self._connection

    async def __aenter__(self) -> SqlUnitOfWork:
        try:
            if self._in_transaction:
                self._connection = await self._database.engine.connect()
                self._transaction = await self._connection.begin()
            else:
                self._connection = await self._database.autocommit_engine.connect()
        except Exception as exc:
            if self._connection is not None:
                await self._connection.close()
            raise self._database.translate(exc) from exc
        self.signing_keys = SqlSigningKeyRepository(self._connection, self._sealer)
        self.users = SqlUserRepository(self._connection)
        self.sessions = SqlSessionRepository(self._connection)
        self.one_time_tokens = SqlOneTimeTokenRepository(self._connection)
        self.service_accounts = SqlServiceAccountRepository(self._connection)
        self.providers = SqlProviderRepository(self._connection)
        self.connections = SqlConnectionRepository(self._connection, self._sealer)
        self.login_failures = SqlLoginFailures(self._connection)
        self.api_resources = SqlApiResourceRepository(self._connection)
        self.grants = SqlGrantRepository(self._connection)
        self.account_keys = SqlAccountKeyRepository(self._connection)
        self.trusted_issuers = SqlTrustedIssuerRepository(self._connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            # A COMMIT once sent may apply: it is seen through even if the call is
            # cancelled meanwhile, so that what follows (the audit outcome) is the truth.
            await complete_absorbing_cancellation(self._end(commit=True))
            return
        await self._end(commit=False)
        if is_connection_failure(exc):
            raise self._database.translate(exc) from exc

    async def _end(self, *, commit: bool) -> None:
        assert self._connection is not None
        try:
            if self._transaction is not None:  # else each statement committed as it ran
                await (self._transaction.commit() if commit else self._transaction.rollback())
        except Exception as error:
            if commit:
                raise self._database.translate(error) from error
        finally:
            # A broken connection may fail to close; the pool discards it either way.
            with contextlib.suppress(Exception):
                await self._connection.close()


class SqlUnitOfWorkFactory:
    def __init__(self, database: Database, sealer: Sealer) -> None:
        self._database = database
        self._sealer = sealer

    def __call__(self, *, atomic: bool = True) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._database, self._sealer, atomic=atomic)
