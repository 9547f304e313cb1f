"""Domain errors: what went wrong, in terms the api layer maps to a gRPC status.

Each error carries a stable `reason` (UPPER_SNAKE_CASE, part of the contract) and the
`domain` it belongs to (`keyhold.identity`, ...). The api layer is the only place that
turns them into status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: its path (`user.email`) and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a handler may raise on purpose."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        domain: str = "keyhold",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.domain = domain
        self.metadata = metadata or {}


class InvalidArgument(DomainError):
    """The request is malformed; `violations` name the fields."""

    def __init__(
        self,
        reason: str,
        message: str,
        violations: list[FieldViolation] | tuple[FieldViolation, ...] = (),
        *,
        domain: str = "keyhold",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, message, domain=domain, metadata=metadata)
        self.violations = tuple(violations)


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not prove who the caller is."""


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""


class NotFound(DomainError):
    """The resource does not exist, or is not visible to the caller."""


class AlreadyExists(DomainError):
    """A resource with the same identity exists."""


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""


class ResourceExhausted(DomainError):
    """Throttled or locked out; the caller may retry after `retry_after_seconds`."""

    def __init__(
        self,
        reason: str,
        message: str,
        retry_after_seconds: float,
        *,
        domain: str = "keyhold",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, message, domain=domain, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    """A dependency (database, upstream provider) cannot be reached right now."""
