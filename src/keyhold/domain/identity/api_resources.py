"""API resources: the services that accept Keyhold tokens, each with one audience, the
scopes it defines and the roles that bundle them (docs/plans/fleet-authorization.md).

`api_resource` checks a definition whole and reports every field it refuses at once, so
that a caller fixes a request in one round."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN

RESOURCE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
AUDIENCE = re.compile(r"^[A-Za-z0-9._:/-]{1,256}\Z")
SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,127}\Z")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}\Z")
MAX_DISPLAY_NAME = 128
MAX_DESCRIPTION = 256
MAX_SCOPES = 100
MAX_ROLES = 50


@dataclass(frozen=True, slots=True)
class ApiResource:
    id: str
    display_name: str
    audience: str
    scopes: Mapping[str, str]  # name → description
    roles: Mapping[str, frozenset[str]]  # role → the resource's scopes it grants

    @property
    def name(self) -> str:
        return f"api-resources/{self.id}"

    def scopes_of(self, roles: frozenset[str]) -> frozenset[str]:
        """The scopes that `roles` grant here; roles this resource lacks grant none."""
        return frozenset().union(*(self.roles.get(role, frozenset()) for role in roles))


def api_resource(
    resource_id: str,
    display_name: str,
    audience: str,
    scopes: Mapping[str, str],
    roles: Mapping[str, frozenset[str]],
) -> ApiResource:
    """The resource, if every part of its definition is valid; else InvalidArgument
    (`API_RESOURCE_INVALID`) naming each refused field."""
    violations = [
        *_identity_violations(resource_id, display_name, audience),
        *_scope_violations(scopes),
        *_role_violations(roles, scopes),
    ]
    if violations:
        raise InvalidArgument(
            "API_RESOURCE_INVALID",
            "the API resource's definition is not valid",
            violations,
            domain=DOMAIN,
        )
    return ApiResource(resource_id, display_name, audience, dict(scopes), dict(roles))


def _identity_violations(
    resource_id: str, display_name: str, audience: str
) -> list[FieldViolation]:
    violations = []
    if not RESOURCE_ID.match(resource_id):
        violations.append(FieldViolation("api_resource_id", "1 to 63 of a-z, 0-9, -"))
    if not display_name.strip() or len(display_name) > MAX_DISPLAY_NAME:
        violations.append(
            FieldViolation("api_resource.display_name", f"1 to {MAX_DISPLAY_NAME} characters")
        )
    if not AUDIENCE.match(audience):
        violations.append(
            FieldViolation("api_resource.audience", "1 to 256 of A-Z, a-z, 0-9, . _ : / -")
        )
    return violations


def _scope_violations(scopes: Mapping[str, str]) -> list[FieldViolation]:
    if len(scopes) > MAX_SCOPES:
        return [FieldViolation("api_resource.scopes", f"at most {MAX_SCOPES}")]
    violations = []
    for scope, description in scopes.items():
        if not SCOPE_NAME.match(scope):
            violations.append(FieldViolation("api_resource.scopes", f"{scope[:128]!r}: bad name"))
        elif len(description) > MAX_DESCRIPTION:
            violations.append(
                FieldViolation(
                    "api_resource.scopes", f"{scope}: description over {MAX_DESCRIPTION}"
                )
            )
    return violations


def _role_violations(
    roles: Mapping[str, frozenset[str]], scopes: Mapping[str, str]
) -> list[FieldViolation]:
    if len(roles) > MAX_ROLES:
        return [FieldViolation("api_resource.roles", f"at most {MAX_ROLES}")]
    violations = []
    for role, granted in roles.items():
        if not ROLE_NAME.match(role):
            violations.append(FieldViolation("api_resource.roles", f"{role[:64]!r}: bad name"))
        elif not granted:
            violations.append(FieldViolation("api_resource.roles", f"{role}: grants no scope"))
        elif unknown := sorted(granted - scopes.keys()):
            violations.append(
                FieldViolation("api_resource.roles", f"{role}: unknown scopes {unknown}")
            )
    return violations
