"""The provider catalog: external data providers reached by OAuth 2.0 or an API key."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.provider import DOMAIN

SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")


class AuthType(enum.StrEnum):
    OAUTH2 = "oauth2"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Provider:
    slug: str
    display_name: str
    auth_type: AuthType
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str
    client_id: str
    default_scopes: tuple[str, ...]
    has_client_secret: bool
    created_at: datetime
    updated_at: datetime
    redirect_uris: tuple[str, ...] = ()
    """The only redirect URIs connections may use, each matched exactly; none refuses all."""
    secret_origin: str = ""
    """The token endpoint origin the stored client secret was issued for ("" without one)."""

    @property
    def name(self) -> str:
        return f"providers/{self.slug}"


def invalid(reason: str, field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        reason, f"{field}: {description}", [FieldViolation(field, description)], domain=DOMAIN
    )


def slug_from_name(name: str, field: str = "name") -> str:
    collection, _, slug = name.partition("/")
    if collection != "providers" or not SLUG.match(slug):
        raise invalid("RESOURCE_NAME_INVALID", field, "expected providers/{slug}")
    return slug


def validate_slug(slug: str, field: str = "provider_id") -> str:
    if not SLUG.match(slug):
        raise invalid(
            "PROVIDER_ID_INVALID", field, "2-63 of a-z, 0-9 and -, starting with a letter"
        )
    return slug


def validate_endpoint(url: str, field: str, *, required: bool) -> str:
    """An absolute http(s) URL with a host and no fragment. Which of them the server may
    fetch is the egress policy's to say."""
    if not url:
        if required:
            raise invalid("ENDPOINT_INVALID", field, "is required")
        return ""
    if len(url) > 2048 or any(ch.isspace() for ch in url):
        raise invalid("ENDPOINT_INVALID", field, "must be an https URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:  # an unbalanced IPv6 bracket, a bad port
        raise invalid("ENDPOINT_INVALID", field, "must be an https URL") from exc
    if not parts.hostname or parts.scheme not in ("http", "https") or parts.fragment:
        raise invalid("ENDPOINT_INVALID", field, "must be an https URL")
    return url


@dataclass(frozen=True, slots=True)
class SealedClientSecret:
    """The client secret as stored, read in one go with the origin it is bound to."""

    ciphertext: bytes = field(repr=False)
    key_id: str
    origin: str


class ProviderRepository(Protocol):
    async def add(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        """Raises ProviderExists for a duplicate slug."""
        ...

    async def get(self, slug: str) -> Provider | None: ...

    async def client_secret(self, slug: str) -> SealedClientSecret | None: ...

    async def page(self, after: str | None, limit: int) -> list[Provider]: ...

    async def update(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        """Replace the fields; the secret too when `sealed_secret` is given."""
        ...

    async def delete(self, slug: str) -> bool: ...

    async def has_connections(self, slug: str) -> bool: ...


class ProviderExists(Exception):
    """A provider with that slug exists."""
