"""The unit of work: one transaction over the repositories a use case needs."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from keyhold.domain.identity.account_keys import AccountKeyRepository
from keyhold.domain.identity.api_resources import ApiResourceRepository
from keyhold.domain.identity.grants import GrantRepository
from keyhold.domain.identity.lockout import LoginFailureStore
from keyhold.domain.identity.one_time_tokens import OneTimeTokenRepository
from keyhold.domain.identity.service_accounts import ServiceAccountRepository
from keyhold.domain.identity.sessions import SessionRepository
from keyhold.domain.identity.trusted_issuers import TrustedIssuerRepository
from keyhold.domain.identity.users import UserRepository
from keyhold.domain.provider.connections import ConnectionRepository
from keyhold.domain.provider.providers import ProviderRepository
from keyhold.domain.signing_keys import SigningKeyRepository


class UnitOfWork(Protocol):
    """Commits when the `async with` block ends cleanly, rolls back otherwise.
    Raises `Unavailable` when the store cannot be reached."""

    @property
    def signing_keys(self) -> SigningKeyRepository: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def one_time_tokens(self) -> OneTimeTokenRepository: ...

    @property
    def service_accounts(self) -> ServiceAccountRepository: ...

    @property
    def providers(self) -> ProviderRepository: ...

    @property
    def connections(self) -> ConnectionRepository: ...

    @property
    def login_failures(self) -> LoginFailureStore: ...

    @property
    def api_resources(self) -> ApiResourceRepository: ...

    @property
    def grants(self) -> GrantRepository: ...

    @property
    def account_keys(self) -> AccountKeyRepository: ...

    @property
    def trusted_issuers(self) -> TrustedIssuerRepository: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, atomic: bool = True) -> UnitOfWork:
        """A unit of work: all its writes take effect together at the end of the block,
        or none does. `atomic=False`: the block's statements need not take effect
        together, each may take effect on its own (a store may then save the round trips
        a transaction costs); for a single write followed by reads."""
        ...
