"""Grants on registered API resources: scopes to service accounts, roles to users, and
the scopes a service account may delegate by token exchange. Grants on Keyhold's own
resource are the accounts' `scopes` and the users' `roles`, kept on their rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# resource id → the scopes (or roles) held there
HeldByResource = Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class ExchangeTerms:
    """What bounds a token exchange for one user at one API resource."""

    resource_id: str
    delegable: frozenset[str]  # what the calling account may delegate there
    role_scopes: Mapping[str, frozenset[str]]  # the user's roles there → their scopes

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.role_scopes)

    @property
    def user_scopes(self) -> frozenset[str]:
        return frozenset().union(*self.role_scopes.values())


class GrantRepository(Protocol):
    async def account_scopes(self, account_ids: Sequence[str]) -> dict[str, HeldByResource]:
        """Each account's scope grants by resource (accounts with none are left out)."""
        ...

    async def add_account_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None:
        """Adds to the account's grant; scopes already held stay as they are."""
        ...

    async def remove_account_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None: ...

    async def user_roles(self, user_id: str) -> HeldByResource:
        """The user's role grants by resource."""
        ...

    async def add_user_roles(self, user_id: str, resource_id: str, roles: frozenset[str]) -> None:
        """Adds to the user's roles there; roles already held stay as they are."""
        ...

    async def remove_user_roles(
        self, user_id: str, resource_id: str, roles: frozenset[str]
    ) -> None: ...

    async def account_scopes_at(self, account_id: str, audience: str) -> frozenset[str] | None:
        """The account's scope grant at the API resource whose audience is `audience`, in
        one read; None when no resource has it."""
        ...

    async def exchange_terms(
        self, account_id: str, user_id: str, audience: str
    ) -> ExchangeTerms | None:
        """The terms of an exchange by the account for the user at the API resource
        whose audience is `audience`, in one read; None when no resource has it."""
        ...

    async def set_exchange_scopes(
        self, account_id: str, resource_id: str, scopes: frozenset[str]
    ) -> None:
        """Replaces what the account may delegate there."""
        ...

    async def delete_exchange_scopes(self, account_id: str, resource_id: str) -> bool:
        """Withdraws the account's exchange grant there; whether it had one."""
        ...
