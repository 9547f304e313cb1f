"""Users and the rules for their fields."""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.email_domains import domain_problem

ROLES = frozenset({"user", "admin"})
DEFAULT_ROLES = frozenset({"user"})
MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 200
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+\Z")
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class UserState(enum.Enum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    display_name: str
    password_hash: str
    email_verified: bool
    state: UserState
    roles: frozenset[str]
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return f"users/{self.id}"

    @property
    def is_active(self) -> bool:
        return self.state is UserState.ACTIVE

    def with_changes(self, **changes: object) -> User:
        return replace(self, **changes)  # type: ignore[arg-type]


def _has_control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value)


def normalize_email(raw: str, field: str = "email") -> str:
    """Trimmed and lower-cased; INVALID_ARGUMENT (EMAIL_INVALID) when not an address."""
    email = raw.strip().lower()
    if (
        len(email) > MAX_EMAIL_LENGTH
        or not _EMAIL.match(email)
        or _has_control_characters(email)
        or email.endswith(".")
    ):
        raise InvalidArgument(
            "EMAIL_INVALID",
            "email is not a valid address",
            [FieldViolation(field, "must be an address like name@example.com")],
            domain=DOMAIN,
        )
    return email


def normalize_new_email(raw: str, field: str = "email") -> str:
    """`normalize_email`, for an address a new account is to have: its domain must also
    be a valid IDNA name that mixes no scripts within a label (`email_domains`).
    Addresses are looked up with `normalize_email` alone, so that logging in answers as
    it always has and an account made before this rule still finds its address."""
    email = normalize_email(raw, field)
    problem = domain_problem(email.rpartition("@")[2])
    if problem is not None:
        raise InvalidArgument(
            "EMAIL_INVALID",
            "email is not a valid address",
            [FieldViolation(field, problem)],
            domain=DOMAIN,
        )
    return email


def validate_display_name(value: str, field: str = "display_name") -> str:
    name = value.strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH or _has_control_characters(name):
        raise InvalidArgument(
            "DISPLAY_NAME_INVALID",
            f"display_name must be at most {MAX_DISPLAY_NAME_LENGTH} printable characters",
            [FieldViolation(field, "too long or has control characters")],
            domain=DOMAIN,
        )
    return name


def validate_roles(roles: list[str], field: str = "user.roles") -> frozenset[str]:
    unknown = sorted(set(roles) - ROLES)
    if unknown or not roles:
        raise InvalidArgument(
            "ROLE_UNKNOWN",
            f"roles must be a non-empty subset of {sorted(ROLES)}",
            [FieldViolation(field, f"unknown roles: {unknown}" if unknown else "empty")],
            domain=DOMAIN,
        )
    return frozenset(roles)


def user_id_from_name(name: str, caller_subject: str, field: str = "name") -> str:
    """`users/{id}` or `users/me` (the caller) → the id."""
    if name == "users/me":
        name = caller_subject
    collection, _, user_id = name.partition("/")
    if collection != "users" or not USER_ID.match(user_id):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be users/{{id}} or users/me",
            [FieldViolation(field, "expected users/{id} or users/me")],
            domain=DOMAIN,
        )
    return user_id


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises EmailTaken when the email is in use."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def by_email(self, email: str) -> User | None: ...

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[User]:
        """Users ordered by (created_at, id), after the given (created_at ISO, id)."""
        ...

    async def update(self, user: User) -> None: ...

    async def delete(self, user_id: str) -> bool: ...


class EmailTaken(Exception):
    """The repository refused a duplicate email."""
