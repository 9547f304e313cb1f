"""Authorization: mutual TLS, principal types, roles, scopes and resource ownership from
the policy.

Ownership of `users/...` names is decided here; other collections (sessions,
connections) register an owner resolver that looks the resource up. A resource whose
owner cannot be established is refused to everyone but admins.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping

from keyhold.api.policy import MethodPolicy
from keyhold.domain.call import TransportIdentity
from keyhold.domain.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from keyhold.domain.principal import Principal

OwnerResolver = Callable[[str], Awaitable[str | None]]
"""Given a resource name, the subject (`users/{id}`) that owns it, or None."""

_USER_NAME = re.compile(r"^users/[A-Za-z0-9_-]{1,64}\Z")
_SELF_NAMES = {"users/me", "sessions/current"}


def _deny(reason: str, message: str) -> PermissionDenied:
    return PermissionDenied(reason, message, domain="keyhold.identity")


def field_value(message: object, path: tuple[str, ...]) -> str:
    value: object = message
    for part in path:
        value = getattr(value, part)
    return value if isinstance(value, str) else ""


class Authorizer:
    def __init__(self, owner_resolvers: Mapping[str, OwnerResolver] | None = None) -> None:
        """`owner_resolvers`: for each collection whose resources callers own, how to
        find a resource's owner."""
        self._resolvers = dict(owner_resolvers or {})

    def check(
        self, policy: MethodPolicy, principal: Principal, transport: TransportIdentity
    ) -> bool:
        """Everything but resource ownership, which needs no lookup; True when the
        ownership of the request's resource is still to be checked (`check_owner`)."""
        if policy.require_mtls and not transport.is_mutual_tls:
            raise Unauthenticated(
                "MTLS_REQUIRED",
                "this method needs a connection with a verified client certificate (mutual TLS)",
                domain="keyhold.identity",
            )
        if policy.public:
            return False
        if policy.principal_types and principal.type not in policy.principal_types:
            kinds = ", ".join(sorted(t.value for t in policy.principal_types))
            raise _deny("PRINCIPAL_TYPE_NOT_ALLOWED", f"only {kinds} principals may call this")
        if principal.is_admin:
            return False
        if policy.roles and not policy.roles & principal.roles:
            raise _deny(
                "ROLE_REQUIRED", f"needs one of the roles: {', '.join(sorted(policy.roles))}"
            )
        if not policy.scopes <= principal.scopes:
            missing = ", ".join(sorted(policy.scopes - principal.scopes))
            raise _deny("SCOPE_REQUIRED", f"needs the scopes: {missing}")
        return bool(policy.owner_field)

    async def check_owner(
        self, policy: MethodPolicy, principal: Principal, request: object
    ) -> None:
        field = ".".join(policy.owner_field)
        name = field_value(request, policy.owner_field)
        if not name:
            raise InvalidArgument(
                "RESOURCE_NAME_MISSING",
                f"{field} is required",
                [FieldViolation(field, "a resource name is required")],
            )
        if await self._owner_of(name, principal) != principal.subject:
            raise PermissionDenied(
                "NOT_RESOURCE_OWNER",
                f"{field} names a resource the caller does not own",
                domain="keyhold.identity",
                resource=name,
            )

    async def _owner_of(self, name: str, principal: Principal) -> str | None:
        if name in _SELF_NAMES:
            return principal.subject
        if _USER_NAME.match(name):
            return name
        resolver = self._resolvers.get(name.partition("/")[0])
        return None if resolver is None else await resolver(name)
