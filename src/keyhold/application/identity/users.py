"""Users: register, read, list, update (display name; roles and state for admins), delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.revocations import Revocations
from keyhold.application.pagination import (
    decode_page_token,
    page_of,
    page_size,
    time_id_cursor,
    time_id_token,
)
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.notices import AccountNotices
from keyhold.domain.identity.passwords import PasswordHasher, PasswordPolicy
from keyhold.domain.identity.users import (
    DEFAULT_ROLES,
    EmailTaken,
    User,
    UserState,
    normalize_email,
    normalize_new_email,
    user_id_from_name,
    validate_display_name,
    validate_roles,
)
from keyhold.domain.unit_of_work import UnitOfWork, UnitOfWorkFactory

UPDATABLE = {"display_name", "roles", "state"}
ADMIN_ONLY = {"roles", "state"}


@dataclass(frozen=True, slots=True)
class UserPatch:
    display_name: str = ""
    roles: tuple[str, ...] = ()
    state: UserState | None = None


def not_found(name: str) -> NotFound:
    return NotFound("USER_NOT_FOUND", f"{name} does not exist", domain=DOMAIN)


async def store_changed_user(uow: UnitOfWork, user: User, updated: User) -> list[str]:
    """Stores `updated` (the user that was `user`). Tokens carry Keyhold roles, and a
    disabled user must lose access: either change ends the user's sessions, whose ids
    are returned for the caller to announce once the unit of work has committed."""
    await uow.users.update(updated)
    if updated.roles == user.roles and updated.is_active:
        return []
    return await uow.sessions.revoke_for_user(user.id, updated.updated_at, "user_changed")


class Users:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
        notices: AccountNotices,
        *,
        self_sign_up: bool,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._hasher = hasher
        self._policy = policy
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock
        self._notices = notices
        self._self_sign_up = self_sign_up

    async def register(self, email: str, password: str, display_name: str) -> User | None:
        """CreateUser. An administrator creates the user and gets it back (EMAIL_TAKEN
        when the address is taken). Anyone else is signing themselves up, and learns
        nothing about which addresses have accounts: None whether the address was new
        (the user is created) or taken (its owner is told; the trail records
        EMAIL_TAKEN)."""
        if current_call().principal.is_admin:
            return await self.create(email, password, display_name)
        if not self._self_sign_up:
            raise PermissionDenied(
                "SIGN_UP_DISABLED",
                "self-service sign-up is off; an administrator creates users",
                domain=DOMAIN,
            )
        try:
            await self.create(email, password, display_name)
        except AlreadyExists:
            async with self._unit_of_work() as uow:
                owner = await uow.users.by_email(normalize_email(email))
            if owner is not None:
                await self._notices.sign_up_with_existing_email(owner)
        return None

    async def create(
        self,
        email: str,
        password: str,
        display_name: str,
        roles: frozenset[str] = DEFAULT_ROLES,
    ) -> User:
        email = normalize_new_email(email)
        display_name = validate_display_name(display_name)
        self._policy.check(password, email)
        user_id = uuid.uuid4().hex
        async with self._recorder.attempt(Action.USER_CREATE, f"users/{user_id}") as attempt:
            now = self._clock.now()
            user = User(
                id=user_id,
                email=email,
                display_name=display_name,
                password_hash=await self._hasher.hash(password),
                email_verified=False,
                state=UserState.ACTIVE,
                roles=roles,
                created_at=now,
                updated_at=now,
            )
            try:
                async with self._unit_of_work() as uow:
                    await uow.users.add(user)
            except EmailTaken as exc:
                raise AlreadyExists(
                    "EMAIL_TAKEN", "a user with this email exists", domain=DOMAIN
                ) from exc
            attempt.details["roles"] = ",".join(sorted(roles))
        return user

    async def get(self, name: str) -> User:
        user_id = user_id_from_name(name, current_call().principal.subject)
        target = f"users/{user_id}"
        async with self._recorder.read_of(Action.USER_GET, target, owner=target):
            async with self._unit_of_work() as uow:
                user = await uow.users.get(user_id)
            if user is None:
                raise not_found(name)
        return user

    async def page(self, size: int, token: str) -> tuple[list[User], str]:
        """Every user's profile: an administrator's read, always recorded."""
        limit = page_size(size)
        cursor = decode_page_token(token, "users")
        after = time_id_cursor(cursor)
        async with self._recorder.attempt(Action.USERS_LIST, "users") as attempt:
            async with self._unit_of_work() as uow:
                found = await uow.users.page(after, limit + 1)
            attempt.details["returned"] = str(min(len(found), limit))
        return page_of(found, limit, lambda last: time_id_token(last.created_at, last.id, "users"))

    async def update(self, name: str, patch: UserPatch, mask: list[str]) -> User:
        principal = current_call().principal
        user_id = user_id_from_name(name, principal.subject, "user.name")
        fields = validated_mask(mask, UPDATABLE)
        if fields & ADMIN_ONLY and not principal.is_admin:
            raise PermissionDenied(
                "FIELD_NOT_UPDATABLE",
                "only admins may change roles or state",
                domain=DOMAIN,
            )
        display_name = (
            validate_display_name(patch.display_name, "user.display_name")
            if "display_name" in fields
            else None
        )
        roles = validate_roles(list(patch.roles)) if "roles" in fields else None
        if "state" in fields and patch.state is None:
            raise InvalidArgument(
                "STATE_INVALID",
                "state must be ACTIVE or DISABLED",
                [FieldViolation("user.state", "must be USER_STATE_ACTIVE or USER_STATE_DISABLED")],
                domain=DOMAIN,
            )
        details = {"fields": ",".join(sorted(fields))}
        async with self._recorder.attempt(Action.USER_UPDATE, f"users/{user_id}", details):
            now = self._clock.now()
            async with self._unit_of_work() as uow:
                user = await uow.users.get(user_id)
                if user is None:
                    raise not_found(f"users/{user_id}")
                updated = user.with_changes(
                    display_name=display_name if display_name is not None else user.display_name,
                    roles=roles if roles is not None else user.roles,
                    state=patch.state if "state" in fields and patch.state else user.state,
                    updated_at=now,
                )
                revoked = await store_changed_user(uow, user, updated)
            await self._revocations.sessions_ended(revoked)
        return updated

    async def delete(self, name: str) -> None:
        user_id = user_id_from_name(name, current_call().principal.subject)
        async with self._recorder.attempt(Action.USER_DELETE, f"users/{user_id}"):
            async with self._unit_of_work() as uow:
                revoked = await uow.sessions.revoke_for_user(user_id, self._clock.now(), "deleted")
                if not await uow.users.delete(user_id):
                    raise not_found(f"users/{user_id}")
            await self._revocations.sessions_ended(revoked)


def validated_mask(mask: list[str], updatable: set[str]) -> set[str]:
    """The fields an update mask names: some of `updatable`, else UPDATE_MASK_INVALID."""
    fields = set(mask)
    if not fields or not fields <= updatable:
        raise InvalidArgument(
            "UPDATE_MASK_INVALID",
            f"update_mask must name some of {sorted(updatable)}",
            [
                FieldViolation(
                    "update_mask", f"unknown or missing paths: {sorted(fields - updatable)}"
                )
            ],
            domain=DOMAIN,
        )
    return fields
