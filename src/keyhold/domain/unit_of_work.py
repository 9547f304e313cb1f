"""The unit of work: one transaction over the repositories a use case needs."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from keyhold.domain.signing_keys import SigningKeyRepository


class UnitOfWork(Protocol):
    """Commits when the `async with` block ends cleanly, rolls back otherwise.
    Raises `Unavailable` when the store cannot be reached."""

    @property
    def signing_keys(self) -> SigningKeyRepository: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]
