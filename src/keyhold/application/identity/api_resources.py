"""API resources and the grants of their scopes and roles (issue 22's model: each
service of a fleet has its own audience, scopes and roles).

Keyhold itself is the built-in resource `api-resources/keyhold`: its definition is the
server's (its configured audience, its scope registry, the roles `user` and `admin`)
and cannot be changed; grants on it are the accounts' `scopes` and users' `roles`.
Grants take effect for tokens issued from then on: an account's or user's tokens
already issued keep what they carry until they expire, except that a change of a
user's Keyhold roles ends the user's sessions (as UpdateUser does)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.users import not_found as user_not_found
from keyhold.application.identity.users import store_changed_user, validated_mask
from keyhold.application.pagination import (
    decode_page_token,
    encode_page_token,
    id_cursor,
    page_of,
    page_size,
)
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FieldViolation, InvalidArgument, NotFound
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.api_resources import (
    BUILT_IN_ID,
    RESOURCE_ID,
    ApiResource,
    api_resource,
    audience_taken,
    built_in_resource,
    built_in_unchangeable,
    resource_exists,
    resource_id_from_name,
    resource_in_use,
    resource_not_found,
)
from keyhold.domain.identity.grants import HeldByResource
from keyhold.domain.identity.service_accounts import account_id_from_name, account_not_found
from keyhold.domain.identity.users import user_id_from_name, validate_roles
from keyhold.domain.unit_of_work import UnitOfWork, UnitOfWorkFactory

UPDATABLE = {"display_name", "audience", "scopes", "roles"}


@dataclass(frozen=True, slots=True)
class Definition:
    """What a caller says an API resource is (the parts an update's mask names)."""

    display_name: str = ""
    audience: str = ""
    scopes: Mapping[str, str] | None = None
    roles: Mapping[str, frozenset[str]] | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a holder has on one resource: scopes or roles."""

    resource: ApiResource
    held: frozenset[str]


def _nothing_asked(field: str) -> InvalidArgument:
    return InvalidArgument(
        "GRANT_EMPTY",
        f"{field} names nothing",
        [FieldViolation(field, "at least one")],
        domain=DOMAIN,
    )


class ApiResources:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
        audience: str,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock
        self._audience = audience

    def built_in(self) -> ApiResource:
        """Keyhold's own resource, as the server defines it."""
        return built_in_resource(self._audience)

    def _as_defined(self, stored: ApiResource) -> ApiResource:
        """The built-in resource's row completed with the server's definition."""
        if not stored.built_in:
            return stored
        assert stored.created_at is not None
        assert stored.updated_at is not None
        return built_in_resource(self._audience).stored(stored.created_at, stored.updated_at)

    async def _found(self, uow: UnitOfWork, resource_id: str) -> ApiResource:
        stored = await uow.api_resources.get(resource_id)
        if stored is None:
            raise resource_not_found(f"api-resources/{resource_id}")
        return self._as_defined(stored)

    async def _check_audience_free(self, uow: UnitOfWork, audience: str, resource_id: str) -> None:
        holder = await uow.api_resources.by_audience(audience)
        if audience == self._audience or (holder is not None and holder.id != resource_id):
            raise audience_taken(audience)

    async def create(self, resource_id: str, definition: Definition) -> ApiResource:
        resource = api_resource(
            resource_id,
            definition.display_name,
            definition.audience,
            definition.scopes or {},
            definition.roles or {},
        )
        details = {"audience": resource.audience}
        async with self._recorder.attempt(Action.API_RESOURCE_CREATE, resource.name, details):
            now = self._clock.now()
            resource = resource.stored(now, now)
            async with self._unit_of_work() as uow:
                if await uow.api_resources.get(resource_id) is not None:
                    raise resource_exists(resource.name)
                await self._check_audience_free(uow, resource.audience, resource_id)
                await uow.api_resources.add(resource)
        return resource

    async def get(self, name: str) -> ApiResource:
        resource_id = resource_id_from_name(name)
        async with self._unit_of_work(atomic=False) as uow:
            return await self._found(uow, resource_id)

    async def page(self, size: int, token: str) -> tuple[list[ApiResource], str]:
        limit = page_size(size)
        after = id_cursor(decode_page_token(token, "api-resources"), RESOURCE_ID)
        async with self._unit_of_work(atomic=False) as uow:
            found = await uow.api_resources.page(after, limit + 1)
        resources = [self._as_defined(resource) for resource in found]
        return page_of(resources, limit, lambda last: encode_page_token(last.id, "api-resources"))

    async def update(self, name: str, definition: Definition, mask: list[str]) -> ApiResource:
        resource_id = resource_id_from_name(name, "api_resource.name")
        fields = validated_mask(mask, UPDATABLE)
        details = {"fields": ",".join(sorted(fields))}
        async with (
            self._recorder.attempt(Action.API_RESOURCE_UPDATE, name, details),
            self._unit_of_work() as uow,
        ):
            current = await self._found(uow, resource_id)
            if current.built_in:
                raise built_in_unchangeable()
            changed = api_resource(
                resource_id,
                definition.display_name if "display_name" in fields else current.display_name,
                definition.audience if "audience" in fields else current.audience,
                (definition.scopes or {}) if "scopes" in fields else current.scopes,
                _roles_kept(current, definition, fields),
            )
            if changed.audience != current.audience:
                await self._check_audience_free(uow, changed.audience, resource_id)
            assert current.created_at is not None
            updated = changed.stored(current.created_at, self._clock.now())
            await uow.api_resources.replace(updated)
        return updated

    async def delete(self, name: str, force: bool) -> None:
        resource_id = resource_id_from_name(name)
        details = {"force": str(force).lower()}
        async with (
            self._recorder.attempt(Action.API_RESOURCE_DELETE, name, details) as attempt,
            self._unit_of_work() as uow,
        ):
            resource = await self._found(uow, resource_id)
            if resource.built_in:
                raise built_in_unchangeable()
            grants = await uow.api_resources.grants_using(resource_id)
            attempt.details["grants"] = str(grants)
            if grants and not force:
                raise resource_in_use(name, grants)
            await uow.api_resources.delete(resource_id)

    async def account_grants(self, account_ids: list[str]) -> dict[str, list[Grant]]:
        """Each account's grants on registered resources, by account id."""
        async with self._unit_of_work(atomic=False) as uow:
            held = await uow.grants.account_scopes(account_ids)
            resources = await self._resources_of(uow, held.values())
        return {
            account: [Grant(resources[r], scopes) for r, scopes in by.items() if r in resources]
            for account, by in held.items()
        }

    async def user_grants(self, user_id: str) -> list[Grant]:
        """The user's role grants on registered resources."""
        async with self._unit_of_work(atomic=False) as uow:
            held = await uow.grants.user_roles(user_id)
            resources = await self._resources_of(uow, [held])
        return [Grant(resources[r], roles) for r, roles in held.items() if r in resources]

    async def _resources_of(
        self, uow: UnitOfWork, held: Iterable[HeldByResource]
    ) -> dict[str, ApiResource]:
        ids = sorted({resource_id for by in held for resource_id in by})
        found = {}
        for resource_id in ids:
            resource = await uow.api_resources.get(resource_id)
            if resource is not None:
                found[resource_id] = self._as_defined(resource)
        return found

    async def grant_scopes(self, account: str, resource_name: str, scopes: list[str]) -> Grant:
        account_id, resource_id, asked, details = _asked(account, resource_name, scopes)
        async with self._recorder.attempt(
            Action.SERVICE_ACCOUNT_SCOPES_GRANT, f"service-accounts/{account_id}", details
        ):
            return await self._change_scopes(account_id, resource_id, asked, grant=True)

    async def revoke_scopes(self, account: str, resource_name: str, scopes: list[str]) -> Grant:
        account_id, resource_id, asked, details = _asked(account, resource_name, scopes)
        async with self._recorder.attempt(
            Action.SERVICE_ACCOUNT_SCOPES_REVOKE, f"service-accounts/{account_id}", details
        ):
            return await self._change_scopes(account_id, resource_id, asked, grant=False)

    async def _change_scopes(
        self, account_id: str, resource_id: str, asked: frozenset[str], *, grant: bool
    ) -> Grant:
        async with self._unit_of_work() as uow:
            resource = await self._found(uow, resource_id)
            if grant and (unknown := resource.unknown_scopes(asked, "scopes")):
                raise unknown
            stored = await uow.service_accounts.get(account_id)
            if stored is None:
                raise account_not_found(f"service-accounts/{account_id}")
            if resource.built_in:
                held = stored.scopes | asked if grant else stored.scopes - asked
                await uow.service_accounts.set_scopes(account_id, held)
                return Grant(resource, held)
            if grant:
                await uow.grants.add_account_scopes(account_id, resource_id, asked)
            else:
                await uow.grants.remove_account_scopes(account_id, resource_id, asked)
            held_now = await uow.grants.account_scopes([account_id])
        return Grant(resource, held_now.get(account_id, {}).get(resource_id, frozenset()))

    async def grant_roles(self, user: str, resource_name: str, roles: list[str]) -> Grant:
        user_id, resource_id, asked, details = _asked_of_user(user, resource_name, roles)
        async with self._recorder.attempt(Action.USER_ROLES_GRANT, f"users/{user_id}", details):
            return await self._change_roles(user_id, resource_id, asked, grant=True)

    async def revoke_roles(self, user: str, resource_name: str, roles: list[str]) -> Grant:
        user_id, resource_id, asked, details = _asked_of_user(user, resource_name, roles)
        async with self._recorder.attempt(Action.USER_ROLES_REVOKE, f"users/{user_id}", details):
            return await self._change_roles(user_id, resource_id, asked, grant=False)

    async def _change_roles(
        self, user_id: str, resource_id: str, asked: frozenset[str], *, grant: bool
    ) -> Grant:
        revoked: list[str] = []
        async with self._unit_of_work() as uow:
            resource = await self._found(uow, resource_id)
            if grant and (unknown := resource.unknown_roles(asked, "roles")):
                raise unknown
            found = await uow.users.get(user_id)
            if found is None:
                raise user_not_found(f"users/{user_id}")
            if resource.built_in:
                held = found.roles | asked if grant else found.roles - asked
                changed = found.with_changes(
                    roles=validate_roles(sorted(held), "roles"), updated_at=self._clock.now()
                )
                revoked = await store_changed_user(uow, found, changed)
                result = Grant(resource, changed.roles)
            else:
                if grant:
                    await uow.grants.add_user_roles(user_id, resource_id, asked)
                else:
                    await uow.grants.remove_user_roles(user_id, resource_id, asked)
                held_now: HeldByResource = await uow.grants.user_roles(user_id)
                result = Grant(resource, held_now.get(resource_id, frozenset()))
        await self._revocations.sessions_ended(revoked)
        return result

    async def set_exchange_grant(
        self, account: str, resource_name: str, scopes: list[str]
    ) -> Grant:
        account_id = account_id_from_name(account, "service_account")
        resource_id = resource_id_from_name(resource_name, "api_resource")
        asked = frozenset(scopes)
        if not asked:
            raise _nothing_asked("delegable_scopes")
        details = _details(resource_id, "scopes", asked)
        async with (
            self._recorder.attempt(
                Action.TOKEN_EXCHANGE_GRANT_SET, f"service-accounts/{account_id}", details
            ),
            self._unit_of_work() as uow,
        ):
            resource = await self._found(uow, resource_id)
            if resource.built_in:
                raise built_in_unchangeable()
            if unknown := resource.unknown_scopes(asked, "delegable_scopes"):
                raise unknown
            if await uow.service_accounts.get(account_id) is None:
                raise account_not_found(f"service-accounts/{account_id}")
            await uow.grants.set_exchange_scopes(account_id, resource_id, asked)
        return Grant(resource, asked)

    async def delete_exchange_grant(self, account: str, resource_name: str) -> None:
        account_id = account_id_from_name(account, "service_account")
        resource_id = resource_id_from_name(resource_name, "api_resource")
        details = {"api_resource": resource_name}
        async with (
            self._recorder.attempt(
                Action.TOKEN_EXCHANGE_GRANT_DELETE, f"service-accounts/{account_id}", details
            ),
            self._unit_of_work() as uow,
        ):
            if not await uow.grants.delete_exchange_scopes(account_id, resource_id):
                raise NotFound(
                    "EXCHANGE_GRANT_NOT_FOUND",
                    f"service-accounts/{account_id} has no exchange grant on {resource_name}",
                    domain=DOMAIN,
                )


def _asked(
    account: str, resource_name: str, scopes: list[str]
) -> tuple[str, str, frozenset[str], dict[str, str]]:
    """A scope grant's request, read: account id, resource id, the scopes, audit details."""
    account_id = account_id_from_name(account, "service_account")
    resource_id = resource_id_from_name(resource_name, "api_resource")
    asked = frozenset(scopes)
    if not asked:
        raise _nothing_asked("scopes")
    return account_id, resource_id, asked, _details(resource_id, "scopes", asked)


def _asked_of_user(
    user: str, resource_name: str, roles: list[str]
) -> tuple[str, str, frozenset[str], dict[str, str]]:
    """A role grant's request, read: user id, resource id, the roles, audit details."""
    user_id = user_id_from_name(user, "", "user")
    resource_id = resource_id_from_name(resource_name, "api_resource")
    asked = frozenset(roles)
    if not asked:
        raise _nothing_asked("roles")
    return user_id, resource_id, asked, _details(resource_id, "roles", asked)


def _details(resource_id: str, kind: str, asked: frozenset[str]) -> dict[str, str]:
    return {"api_resource": f"api-resources/{resource_id}", kind: ",".join(sorted(asked))}


def _roles_kept(
    current: ApiResource, definition: Definition, fields: set[str]
) -> Mapping[str, frozenset[str]]:
    """The roles of an update: as asked when the mask names them; else the current ones,
    each without the scopes the update removes (a role left with none goes)."""
    if "roles" in fields:
        return definition.roles or {}
    if "scopes" not in fields:
        return current.roles
    remaining = set((definition.scopes or {}).keys())
    kept = {role: scopes & remaining for role, scopes in current.roles.items()}
    return {role: scopes for role, scopes in kept.items() if scopes}


__all__ = ["BUILT_IN_ID", "ApiResources", "Definition", "Grant"]
