"""Notices kept for the test to read instead of delivered: to account owners, and to
the other replicas."""

from __future__ import annotations

from keyhold.domain.identity.users import User


class RecordedAccountNotices:
    def __init__(self) -> None:
        self.sign_ups_with_existing_email: list[User] = []

    async def sign_up_with_existing_email(self, user: User) -> None:
        self.sign_ups_with_existing_email.append(user)


class RecordedReplicaNotices:
    """What this replica told the others, as (kind, ids) in order."""

    def __init__(self) -> None:
        self.published: list[tuple[str, list[str]]] = []

    async def publish(self, kind: str, ids: list[str]) -> None:
        self.published.append((kind, list(ids)))
