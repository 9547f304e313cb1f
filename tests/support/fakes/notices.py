"""Account notices, kept for the test to read instead of delivered."""

from __future__ import annotations

from keyhold.domain.identity.users import User


class RecordedAccountNotices:
    def __init__(self) -> None:
        self.sign_ups_with_existing_email: list[User] = []

    async def sign_up_with_existing_email(self, user: User) -> None:
        self.sign_ups_with_existing_email.append(user)
