"""The provider catalog: admins configure providers, users list them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.pagination import decode_page_token, encode_page_token, page_of, page_size
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from keyhold.domain.identity.users import validate_display_name
from keyhold.domain.provider import DOMAIN
from keyhold.domain.provider.egress import EgressPolicy, EgressRefused
from keyhold.domain.provider.origins import origin_of
from keyhold.domain.provider.providers import (
    AuthType,
    Provider,
    ProviderExists,
    invalid,
    slug_from_name,
    validate_endpoint,
    validate_slug,
)
from keyhold.domain.provider.redirects import validate_redirect_uris
from keyhold.domain.provider.scopes import validate_scope_list
from keyhold.domain.sealing import Sealer
from keyhold.domain.unit_of_work import UnitOfWorkFactory

UPDATABLE = {
    "display_name",
    "authorization_endpoint",
    "token_endpoint",
    "revocation_endpoint",
    "client_id",
    "default_scopes",
    "redirect_uris",
}


ENDPOINTS = ("authorization_endpoint", "token_endpoint", "revocation_endpoint")


def secret_context(slug: str) -> str:
    return f"keyhold/provider/{slug}/client_secret"


@dataclass(frozen=True, slots=True)
class ProviderFields:
    display_name: str = ""
    auth_type: AuthType | None = None
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    revocation_endpoint: str = ""
    client_id: str = ""
    default_scopes: tuple[str, ...] = ()
    redirect_uris: tuple[str, ...] = ()


def not_found(name: str) -> NotFound:
    return NotFound("PROVIDER_NOT_FOUND", f"{name} does not exist", domain=DOMAIN)


def _validated(provider: Provider) -> Provider:
    oauth = provider.auth_type is AuthType.OAUTH2
    if len(provider.client_id) > 256 or (oauth and not provider.client_id):
        raise invalid("CLIENT_ID_INVALID", "provider.client_id", "required for OAuth 2.0")
    validated = replace(
        provider,
        display_name=validate_display_name(provider.display_name, "provider.display_name"),
        authorization_endpoint=validate_endpoint(
            provider.authorization_endpoint, "provider.authorization_endpoint", required=oauth
        ),
        token_endpoint=validate_endpoint(
            provider.token_endpoint, "provider.token_endpoint", required=oauth
        ),
        revocation_endpoint=validate_endpoint(
            provider.revocation_endpoint, "provider.revocation_endpoint", required=False
        ),
        default_scopes=validate_scope_list(provider.default_scopes, "provider.default_scopes"),
        redirect_uris=validate_redirect_uris(provider.redirect_uris, "provider.redirect_uris"),
    )
    revocation = validated.revocation_endpoint
    if revocation and origin_of(revocation) != origin_of(validated.token_endpoint):
        # The revocation request carries the client secret and a refresh token: it may go
        # only where they were issued, the token endpoint's origin.
        raise invalid(
            "ENDPOINT_ORIGIN_MISMATCH",
            "provider.revocation_endpoint",
            "must have the token endpoint's scheme, host and port",
        )
    return validated


def _client_secret_required() -> FailedPrecondition:
    return FailedPrecondition(
        "CLIENT_SECRET_REQUIRED",
        "the token endpoint moves to another origin: supply the client secret issued for it "
        "in the same update (the stored one is never sent to another origin)",
        domain=DOMAIN,
    )


class ProviderCatalog:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        sealer: Sealer,
        recorder: AuditRecorder,
        clock: Clock,
        egress: EgressPolicy,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._sealer = sealer
        self._recorder = recorder
        self._clock = clock
        self._egress = egress

    def _validated(self, provider: Provider) -> Provider:
        return self._within_egress(_validated(provider))

    def _within_egress(self, provider: Provider) -> Provider:
        """The provider, if the server may fetch each of its endpoints as far as can be
        told without resolving names; the check at connect time covers the rest."""
        for endpoint in ENDPOINTS:
            url = getattr(provider, endpoint)
            try:
                if url:
                    self._egress.check_url(url)
            except EgressRefused as exc:
                raise invalid("URL_NOT_ALLOWED", f"provider.{endpoint}", str(exc)) from exc
        return provider

    async def create(self, slug: str, fields: ProviderFields, client_secret: str) -> Provider:
        slug = validate_slug(slug)
        if fields.auth_type is None:
            raise invalid("AUTH_TYPE_INVALID", "provider.auth_type", "OAUTH2 or API_KEY")
        now = self._clock.now()
        provider = self._validated(
            Provider(
                slug=slug,
                display_name=fields.display_name,
                auth_type=fields.auth_type,
                authorization_endpoint=fields.authorization_endpoint,
                token_endpoint=fields.token_endpoint,
                revocation_endpoint=fields.revocation_endpoint,
                client_id=fields.client_id,
                default_scopes=fields.default_scopes,
                has_client_secret=bool(client_secret),
                created_at=now,
                updated_at=now,
                redirect_uris=fields.redirect_uris,
            )
        )
        if client_secret:
            provider = replace(provider, secret_origin=origin_of(provider.token_endpoint))
        sealed, key_id = self._seal(slug, client_secret)
        async with self._recorder.attempt(Action.PROVIDER_CREATE, provider.name):
            try:
                async with self._unit_of_work() as uow:
                    await uow.providers.add(provider, sealed, key_id)
            except ProviderExists as exc:
                raise AlreadyExists(
                    "PROVIDER_EXISTS", f"{provider.name} exists", domain=DOMAIN
                ) from exc
        return provider

    def _seal(self, slug: str, client_secret: str) -> tuple[bytes | None, str]:
        if len(client_secret) > 4096:
            raise invalid("CLIENT_SECRET_INVALID", "client_secret", "at most 4096 characters")
        if not client_secret:
            return None, ""
        return self._sealer.seal(client_secret, secret_context(slug))

    async def update(
        self, name: str, fields: ProviderFields, mask: list[str], client_secret: str
    ) -> Provider:
        slug = slug_from_name(name, "provider.name")
        paths = set(mask)
        if "auth_type" in paths:
            raise invalid("FIELD_NOT_UPDATABLE", "update_mask", "auth_type cannot change")
        if not paths <= UPDATABLE or (not paths and not client_secret):
            raise invalid("UPDATE_MASK_INVALID", "update_mask", f"name some of {sorted(UPDATABLE)}")
        sealed, key_id = self._seal(slug, client_secret)
        details = {"fields": ",".join(sorted(paths)), "secret_replaced": str(bool(sealed)).lower()}
        async with (
            self._recorder.attempt(Action.PROVIDER_UPDATE, f"providers/{slug}", details) as attempt,
            self._unit_of_work() as uow,
        ):
            current = await uow.providers.get(slug)
            if current is None:
                raise not_found(f"providers/{slug}")
            changes = {path: getattr(fields, path) for path in paths}
            now = self._clock.now()
            updated = self._validated(replace(current, **changes, updated_at=now))
            origin = origin_of(updated.token_endpoint)
            if sealed is not None:
                updated = replace(updated, has_client_secret=True, secret_origin=origin)
            elif updated.has_client_secret and updated.secret_origin != origin:
                raise _client_secret_required()
            await uow.providers.update(updated, sealed, key_id)
            moved = origin != origin_of(current.token_endpoint)
            attempt.details["token_origin_changed"] = str(moved).lower()
            if moved and updated.auth_type is AuthType.OAUTH2:
                needing = await uow.connections.require_reauthorization(slug, origin, now)
                attempt.details["connections_needing_reauth"] = str(needing)
        return updated

    async def delete(self, name: str) -> None:
        slug = slug_from_name(name)
        async with (
            self._recorder.attempt(Action.PROVIDER_DELETE, f"providers/{slug}"),
            self._unit_of_work() as uow,
        ):
            if await uow.providers.has_connections(slug):
                raise FailedPrecondition(
                    "PROVIDER_IN_USE", "delete the provider's connections first", domain=DOMAIN
                )
            if not await uow.providers.delete(slug):
                raise not_found(f"providers/{slug}")

    async def page(self, size: int, token: str) -> tuple[list[Provider], str]:
        limit = page_size(size)
        cursor = decode_page_token(token, "providers")
        if cursor is not None and not isinstance(cursor, str):
            raise invalid("PAGE_TOKEN_INVALID", "page_token", "use next_page_token")
        async with (
            self._recorder.attempt(Action.PROVIDERS_LIST, "providers"),
            self._unit_of_work() as uow,
        ):
            found = await uow.providers.page(cursor, limit + 1)
        return page_of(found, limit, lambda last: encode_page_token(last.slug, "providers"))
