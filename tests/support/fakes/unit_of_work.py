"""The unit of work in memory: one transaction over the store's tables."""

from __future__ import annotations

from types import TracebackType

from tests.support.fakes.connections import InMemoryConnectionRepository
from tests.support.fakes.lockout import InMemoryLoginFailureStore
from tests.support.fakes.one_time_tokens import InMemoryOneTimeTokenRepository
from tests.support.fakes.providers import InMemoryProviderRepository
from tests.support.fakes.service_accounts import InMemoryServiceAccountRepository
from tests.support.fakes.sessions import InMemorySessionRepository
from tests.support.fakes.signing_keys import InMemorySigningKeyRepository
from tests.support.fakes.store import InMemoryStore, Transaction
from tests.support.fakes.users import InMemoryUserRepository


class FakeUnitOfWork:
    """Commits when the `async with` block ends cleanly; when it raises (cancellation
    too), nothing it wrote reaches the store. Raises Unavailable on entry while the
    store is unavailable."""

    signing_keys: InMemorySigningKeyRepository
    users: InMemoryUserRepository
    sessions: InMemorySessionRepository
    one_time_tokens: InMemoryOneTimeTokenRepository
    service_accounts: InMemoryServiceAccountRepository
    providers: InMemoryProviderRepository
    connections: InMemoryConnectionRepository
    login_failures: InMemoryLoginFailureStore  # written at once, not with the commit

    def __init__(self, store: InMemoryStore, login_failures: InMemoryLoginFailureStore) -> None:
        self._store = store
        self.login_failures = login_failures
        self._transaction: Transaction | None = None

    async def __aenter__(self) -> FakeUnitOfWork:
        assert self._transaction is None, "a unit of work is entered once"
        tx = self._transaction = self._store.begin()
        self.signing_keys = InMemorySigningKeyRepository(tx)
        self.users = InMemoryUserRepository(tx)
        self.sessions = InMemorySessionRepository(tx, self.login_failures)
        self.one_time_tokens = InMemoryOneTimeTokenRepository(tx)
        self.service_accounts = InMemoryServiceAccountRepository(tx)
        self.providers = InMemoryProviderRepository(tx)
        self.connections = InMemoryConnectionRepository(tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._transaction is not None, "unit of work used outside `async with`"
        if exc is None:
            self._store.commit(self._transaction)
        else:
            self._store.roll_back(self._transaction)


class FakeUnitOfWorkFactory:
    """A `UnitOfWorkFactory`: each call, a new unit of work on the same store."""

    def __init__(
        self, store: InMemoryStore, login_failures: InMemoryLoginFailureStore | None = None
    ) -> None:
        self.store = store
        self.login_failures = login_failures or InMemoryLoginFailureStore()

    def __call__(self, *, atomic: bool = True) -> FakeUnitOfWork:
        """Always atomic: what a non-atomic block may do, an atomic one does too."""
        return FakeUnitOfWork(self.store, self.login_failures)
