"""The password policy (OWASP ASVS v5 V6.2) and the hashing port."""

from __future__ import annotations

import unicodedata
from typing import Protocol

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN

MIN_LENGTH = 12
MAX_LENGTH = 128


def _is_blank(password: str) -> bool:
    """Whether every character is whitespace, a control or an invisible format character
    (a zero-width space, say)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in password)


class PasswordPolicy:
    """At least 12 and at most 128 characters (never truncated), not only whitespace or
    invisible characters, no composition rules, not one of the most common passwords,
    and not containing the email's local part."""

    def __init__(self, common_passwords: frozenset[str]) -> None:
        self._common = common_passwords

    def check(self, password: str, email: str, field: str = "password") -> None:
        problems: list[tuple[str, str]] = []
        if len(password) < MIN_LENGTH:
            problems.append(("PASSWORD_TOO_SHORT", f"must be at least {MIN_LENGTH} characters"))
        if len(password) > MAX_LENGTH:
            problems.append(("PASSWORD_TOO_LONG", f"must be at most {MAX_LENGTH} characters"))
        if password and _is_blank(password):
            problems.append(("PASSWORD_BLANK", "must not be only spaces or invisible characters"))
        if password.lower() in self._common:
            problems.append(("PASSWORD_TOO_COMMON", "is one of the most common passwords"))
        local_part = email.partition("@")[0].lower()
        if len(local_part) >= 3 and local_part in password.lower():
            problems.append(("PASSWORD_CONTAINS_EMAIL", "must not contain the email address"))
        if problems:
            raise InvalidArgument(
                problems[0][0],
                f"{field} does not meet the password policy",
                [FieldViolation(field, description) for _, description in problems],
                domain=DOMAIN,
            )


class PasswordHasher(Protocol):
    """Argon2id hashing; implementations run the work off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for callers with no user to check."""
        ...
