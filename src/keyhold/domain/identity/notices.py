"""Notices to account owners: a port, so that the use cases say what happened and an
adapter (a mailer, or the log) delivers it."""

from __future__ import annotations

from typing import Protocol

from keyhold.domain.identity.users import User


class AccountNotices(Protocol):
    async def sign_up_with_existing_email(self, user: User) -> None:
        """Someone tried to sign up with the email of `user`, who already has an
        account: tell its owner (who may have forgotten it, or not have asked). The
        caller was told nothing about it."""
        ...
