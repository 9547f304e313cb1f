"""The registry of scopes: every permission a service account can be granted."""

from __future__ import annotations

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN

SCOPES: dict[str, str] = {
    "audit.read": "read, stream and verify the audit trail",
    "identity.introspect": "introspect access tokens",
    "identity.verification": "issue email verification tokens for a mailer to deliver",
    "identity.password_reset": "issue password reset tokens for a mailer to deliver",
    "identity.resources.read": "read API resources: their audiences, scopes and roles",
    "provider.credentials.read": "read users' upstream provider credentials",
}


def validate_scopes(scopes: list[str], field: str = "scopes") -> frozenset[str]:
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown:
        raise InvalidArgument(
            "SCOPE_UNKNOWN",
            f"unknown scopes: {', '.join(unknown)}",
            [FieldViolation(field, f"must be among {sorted(SCOPES)}")],
            domain=DOMAIN,
        )
    return frozenset(scopes)
