"""Domain errors: what went wrong, in terms the api layer maps to a gRPC status.

Each error carries a stable `reason` (UPPER_SNAKE_CASE, part of the contract) and the
`domain` it belongs to (`keyhold.identity`, ...). The api layer is the only place that
turns them into status codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: its path (`user.email`) and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a handler may raise on purpose. `code` is the canonical
    status number (google.rpc.Code), recorded in the audit trail."""

    code: ClassVar[int] = 13

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        domain: str = "keyhold",
        metadata: dict[str, str] | None = None,
        resource: str = "",
    ) -> None:
        """`resource`: the resource the error concerns, for the audit trail only (it is
        not sent to the caller)."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.domain = domain
        self.metadata = metadata or {}
        self.resource = resource


class InvalidArgument(DomainError):
    """The request is malformed; `violations` name the fields."""

    code = 3

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

    code = 16


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""

    code = 7


class NotFound(DomainError):
    """The resource does not exist, or is not visible to the caller."""

    code = 5


class AlreadyExists(DomainError):
    """A resource with the same identity exists."""

    code = 6


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""

    code = 9


class ResourceExhausted(DomainError):
    """Throttled or locked out; the caller may retry after `retry_after_seconds`.
    `denial_reason`: when set, the audit trail records the call as DENIED for this
    reason (a refusal of the caller) rather than as FAILED."""

    code = 8

    def __init__(
        self,
        reason: str,
        message: str,
        retry_after_seconds: float,
        *,
        domain: str = "keyhold",
        metadata: dict[str, str] | None = None,
        denial_reason: str = "",
    ) -> None:
        super().__init__(reason, message, domain=domain, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds
        self.denial_reason = denial_reason


class Unavailable(DomainError):
    """A dependency (database, upstream provider) cannot be reached right now."""

    code = 14
