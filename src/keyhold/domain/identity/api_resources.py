"""API resources: the services that accept Keyhold tokens, each with one audience, the
scopes it defines and the roles that bundle them (docs/security.md).

`api_resource` checks a definition whole and reports every field it refuses at once, so
that a caller fixes a request in one round."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from keyhold.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.scopes import SCOPES
from keyhold.domain.identity.users import ROLES

RESOURCE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
AUDIENCE = re.compile(r"^[A-Za-z0-9._:/-]{1,256}\Z")
SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,127}\Z")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}\Z")
MAX_DISPLAY_NAME = 128
MAX_DESCRIPTION = 256
MAX_SCOPES = 100
MAX_ROLES = 50


BUILT_IN_ID = "keyhold"


@dataclass(frozen=True, slots=True)
class ApiResource:
    id: str
    display_name: str
    audience: str
    scopes: Mapping[str, str]  # name → description
    roles: Mapping[str, frozenset[str]]  # role → the resource's scopes it grants
    built_in: bool = False
    created_at: datetime | None = None  # None until stored
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"api-resources/{self.id}"

    def scopes_of(self, roles: frozenset[str]) -> frozenset[str]:
        """The scopes that `roles` grant here; roles this resource lacks grant none."""
        return frozenset().union(*(self.roles.get(role, frozenset()) for role in roles))

    def stored(self, created_at: datetime, updated_at: datetime) -> ApiResource:
        return replace(self, created_at=created_at, updated_at=updated_at)

    def unknown_scopes(self, scopes: frozenset[str], field: str) -> InvalidArgument | None:
        """The error naming the scopes this resource does not define, if any."""
        unknown = sorted(scopes - self.scopes.keys())
        return _unknown("SCOPE_UNKNOWN", "scopes", self, unknown, field) if unknown else None

    def unknown_roles(self, roles: frozenset[str], field: str) -> InvalidArgument | None:
        """The error naming the roles this resource does not define, if any."""
        unknown = sorted(roles - self.roles.keys())
        return _unknown("ROLE_UNKNOWN", "roles", self, unknown, field) if unknown else None


def _unknown(
    reason: str, kind: str, resource: ApiResource, unknown: list[str], field: str
) -> InvalidArgument:
    listed = ", ".join(unknown[:10])
    return InvalidArgument(
        reason,
        f"{resource.name} defines no such {kind}: {listed}",
        [FieldViolation(field, f"not defined by {resource.name}: {listed}")],
        domain=DOMAIN,
    )


def built_in_resource(audience: str) -> ApiResource:
    """Keyhold itself: its audience is the configured one, its scopes are its registry,
    and its roles `user` and `admin` grant no scopes (Keyhold checks them by name)."""
    return ApiResource(
        BUILT_IN_ID,
        "Keyhold",
        audience,
        dict(SCOPES),
        {role: frozenset() for role in sorted(ROLES)},
        built_in=True,
    )


def resource_id_from_name(name: str, field: str = "name") -> str:
    collection, _, resource_id = name.partition("/")
    if collection != "api-resources" or not RESOURCE_ID.match(resource_id):
        raise InvalidArgument(
            "RESOURCE_NAME_INVALID",
            f"{field} must be api-resources/{{id}}",
            [FieldViolation(field, "expected api-resources/{id}")],
            domain=DOMAIN,
        )
    return resource_id


def resource_not_found(name: str) -> NotFound:
    return NotFound("API_RESOURCE_NOT_FOUND", f"{name[:300]} does not exist", domain=DOMAIN)


def resource_exists(name: str) -> AlreadyExists:
    return AlreadyExists("API_RESOURCE_EXISTS", f"{name} exists", domain=DOMAIN)


def audience_taken(audience: str) -> AlreadyExists:
    return AlreadyExists(
        "AUDIENCE_TAKEN", f"another API resource has the audience {audience}", domain=DOMAIN
    )


def audience_unknown() -> InvalidArgument:
    return InvalidArgument(
        "AUDIENCE_UNKNOWN",
        "no API resource has this audience",
        [FieldViolation("audience", "the audience of a registered API resource")],
        domain=DOMAIN,
    )


def built_in_unchangeable() -> FailedPrecondition:
    return FailedPrecondition(
        "RESOURCE_BUILT_IN",
        f"api-resources/{BUILT_IN_ID} is defined by the server and changes only with it",
        domain=DOMAIN,
    )


def resource_in_use(name: str, grants: int) -> FailedPrecondition:
    return FailedPrecondition(
        "RESOURCE_IN_USE",
        f"{name} is used by {grants} grants; delete with force to delete them too",
        domain=DOMAIN,
        metadata={"grants": str(grants)},
    )


class ApiResourceRepository(Protocol):
    """Registered resources. The built-in one is a row without scopes, roles or an
    audience of its own: `get` and `page` return it as stored, `built_in` set."""

    async def add(self, resource: ApiResource) -> None:
        """Stores a new resource; AlreadyExists when its id or audience is taken."""
        ...

    async def get(self, resource_id: str) -> ApiResource | None: ...

    async def by_audience(self, audience: str) -> ApiResource | None: ...

    async def page(self, after_id: str, limit: int) -> list[ApiResource]:
        """Resources by id, after `after_id` ("" for the first page)."""
        ...

    async def replace(self, resource: ApiResource) -> None:
        """Stores a new definition of a stored resource. Its scopes no longer defined
        leave every role and grant; its roles no longer defined leave every grant.
        AlreadyExists when its audience is another resource's."""
        ...

    async def grants_using(self, resource_id: str) -> int:
        """How many grants (scopes, roles, exchange) name the resource."""
        ...

    async def delete(self, resource_id: str) -> bool:
        """Deletes the resource and every grant naming it; whether it existed."""
        ...


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
