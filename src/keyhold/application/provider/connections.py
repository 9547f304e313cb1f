"""Connecting users to providers (OAuth 2.0 with PKCE, or an API key) and keeping the
upstream credentials fresh for internal callers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.pagination import (
    decode_page_token,
    page_of,
    page_size,
    time_id_cursor,
    time_id_token,
)
from keyhold.application.provider.catalog import not_found as provider_not_found
from keyhold.application.provider.catalog import secret_context
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import current_call
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FailedPrecondition, NotFound, Unavailable
from keyhold.domain.identity.users import user_id_from_name
from keyhold.domain.provider import DOMAIN
from keyhold.domain.provider.connections import (
    Connection,
    ConnectionState,
    Credentials,
    PendingAuthorization,
    RefreshLock,
    connection_id_from_name,
)
from keyhold.domain.provider.egress import EgressRefused
from keyhold.domain.provider.oauth import (
    MAX_TOKEN_LIFETIME_SECONDS,
    OAuthClient,
    OAuthError,
    ProviderResponseInvalid,
    ProviderUnreachable,
    TokenSet,
)
from keyhold.domain.provider.origins import origin_of, same_origin
from keyhold.domain.provider.providers import (
    AuthType,
    Provider,
    SealedClientSecret,
    invalid,
    slug_from_name,
)
from keyhold.domain.provider.redirects import require_allowed
from keyhold.domain.provider.scopes import validate_scope_list
from keyhold.domain.sealing import SealedValueUnreadable, Sealer
from keyhold.domain.unit_of_work import UnitOfWorkFactory

MAX_API_KEY_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class StoredClientSecret:
    """A provider's client secret as stored: opened only by a call that sends it, so that
    a secret that no longer opens stops nothing else."""

    slug: str
    sealed: SealedClientSecret | None
    sealer: Sealer

    def open(self) -> str:
        if self.sealed is None:
            return ""
        return self.sealer.open(
            self.sealed.ciphertext, self.sealed.key_id, secret_context(self.slug)
        )

    def for_endpoint(self, url: str) -> str:
        """The secret, to be sent to `url`: "" when there is none; CLIENT_SECRET_REQUIRED,
        without opening it, when `url` is not on the origin it was issued for."""
        if self.sealed is None:
            return ""
        if not same_origin(self.sealed.origin, url):
            raise FailedPrecondition(
                "CLIENT_SECRET_REQUIRED",
                "the stored client secret was issued for another origin; an admin must "
                "supply the one for the provider's token endpoint",
                domain=DOMAIN,
            )
        return self.open()

    def sendable_to(self, url: str) -> bool:
        return self.sealed is None or same_origin(self.sealed.origin, url)


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    value: str
    expires_at: datetime | None
    auth_type: AuthType
    token_type: str


def _state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _bad_state() -> FailedPrecondition:
    return FailedPrecondition(
        "STATE_INVALID", "the state is unknown, used or expired; start again", domain=DOMAIN
    )


def _rejected(error: OAuthError, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        reason,
        f"the provider refused: {error.error}",
        domain=DOMAIN,
        metadata={"oauth_error": error.error[:64]},
    )


def _response_invalid(error: ProviderResponseInvalid) -> FailedPrecondition:
    return FailedPrecondition(
        "PROVIDER_RESPONSE_INVALID",
        f"the provider's token response is unusable: {error}",
        domain=DOMAIN,
        metadata={"field": error.field},
    )


def _needs_reauth() -> FailedPrecondition:
    return FailedPrecondition(
        "CONNECTION_NEEDS_REAUTH",
        "the connection's credentials belong to another token endpoint origin; connect again",
        domain=DOMAIN,
    )


def _unreachable(error: ProviderUnreachable) -> Unavailable | FailedPrecondition:
    if isinstance(error, EgressRefused):  # a retry cannot help: the administrator must act
        return FailedPrecondition(
            "EGRESS_REFUSED",
            "the provider's endpoint is outside the server's egress policy",
            domain=DOMAIN,
        )
    return Unavailable("PROVIDER_UNAVAILABLE", "the provider cannot be reached", domain=DOMAIN)


def connection_not_found(name: str) -> NotFound:
    return NotFound("CONNECTION_NOT_FOUND", f"{name} does not exist", domain=DOMAIN)


class Connections:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        oauth: OAuthClient,
        sealer: Sealer,
        lock: RefreshLock,
        recorder: AuditRecorder,
        clock: Clock,
        *,
        refresh_margin: timedelta,
        authorization_lifetime: timedelta = timedelta(minutes=10),
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._telemetry = telemetry
        self._unit_of_work = unit_of_work
        self._oauth = oauth
        self._sealer = sealer
        self._lock = lock
        self._recorder = recorder
        self._clock = clock
        self._margin = refresh_margin
        self._authorization_lifetime = authorization_lifetime

    async def _provider(self, slug: str) -> tuple[Provider, StoredClientSecret]:
        async with self._unit_of_work() as uow:
            provider = await uow.providers.get(slug)
            sealed = await uow.providers.client_secret(slug)
        if provider is None:
            raise provider_not_found(f"providers/{slug}")
        return provider, StoredClientSecret(slug, sealed, self._sealer)

    async def start(
        self, provider_name: str, redirect_uri: str, scopes: list[str], api_key: str
    ) -> tuple[Connection, str]:
        """A PENDING connection and the URL to send the user to (OAuth 2.0), or an ACTIVE
        one holding the API key."""
        principal = current_call().principal
        slug = slug_from_name(provider_name, "provider")
        requested = validate_scope_list(scopes, "scopes")
        provider, _ = await self._provider(slug)
        now = self._clock.now()
        connection = Connection(
            id=uuid.uuid4().hex,
            user_id=principal.subject.removeprefix("users/"),
            provider=slug,
            state=ConnectionState.ACTIVE,
            scopes=requested or provider.default_scopes,
            expires_at=None,
            created_at=now,
            updated_at=now,
        )
        if provider.auth_type is AuthType.API_KEY:
            if not api_key or len(api_key) > MAX_API_KEY_LENGTH:
                raise invalid("API_KEY_INVALID", "api_key", "1 to 4096 characters")
            async with (
                self._recorder.attempt(
                    Action.CONNECTION_START, connection.name, {"provider": slug}
                ),
                self._unit_of_work() as uow,
            ):
                await uow.connections.add(connection, None, Credentials(api_key=api_key))
            return connection, ""
        if api_key:
            raise invalid("API_KEY_INVALID", "api_key", "this provider uses OAuth 2.0")
        redirect_uri = require_allowed(redirect_uri, provider.redirect_uris, "redirect_uri")
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: within RFC 7636's 43-128
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        pending = PendingAuthorization(
            state_hash=_state_hash(state),
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            expires_at=now + self._authorization_lifetime,
        )
        connection = replace(
            connection,
            state=ConnectionState.PENDING,
            credential_origin=origin_of(provider.token_endpoint),
        )
        query = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(connection.scopes),
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in provider.authorization_endpoint else "?"
        url = provider.authorization_endpoint + separator + urlencode(query)
        async with (
            self._recorder.attempt(Action.CONNECTION_START, connection.name, {"provider": slug}),
            self._unit_of_work() as uow,
        ):
            await uow.connections.add(connection, pending, None)
        return connection, url

    async def complete(self, state: str, code: str) -> Connection:
        principal = current_call().principal
        if not state or len(state) > 256 or not code or len(code) > 2048:
            raise _bad_state()
        async with self._recorder.attempt(Action.CONNECTION_COMPLETE) as attempt:
            now = self._clock.now()
            async with self._unit_of_work() as uow:
                found = await uow.connections.pending(_state_hash(state))
                owner_matches = (
                    found is not None and f"users/{found[0].user_id}" == principal.subject
                )
                if found is None or not owner_matches:
                    raise _bad_state()
                connection, pending = found
                attempt.resource_name = connection.name
            provider, sealed_secret = await self._provider(connection.provider)
            if not same_origin(connection.credential_origin, provider.token_endpoint):
                raise _needs_reauth()
            # Opened before the authorization is spent: one that fails leaves it for a retry.
            secret = sealed_secret.for_endpoint(provider.token_endpoint)
            async with self._unit_of_work() as uow:
                if not await uow.connections.consume_pending(connection.id, now):
                    raise _bad_state()
            try:
                tokens = await self._oauth.exchange_code(
                    provider, secret, code, pending.code_verifier, pending.redirect_uri
                )
            except OAuthError as error:
                attempt.details["oauth_error"] = error.error
                await self._give_up(connection)
                raise _rejected(error, "PROVIDER_REJECTED") from error
            except ProviderResponseInvalid as error:
                attempt.details["invalid_field"] = error.field
                await self._give_up(connection)
                raise _response_invalid(error) from error
            except ProviderUnreachable as exc:
                await self._reopen(connection, pending)
                raise _unreachable(exc) from exc
            except asyncio.CancelledError:
                await asyncio.shield(self._reopen(connection, pending))
                raise
            activated = self._with_tokens(connection, tokens, ConnectionState.ACTIVE)
            async with self._unit_of_work() as uow:
                await uow.connections.save(activated, self._credentials(tokens, None))
        return activated

    async def _reopen(self, connection: Connection, pending: PendingAuthorization) -> None:
        """The exchange did not happen (as far as we know): the same state and code may be
        tried again until the authorization expires."""
        async with self._unit_of_work() as uow:
            await uow.connections.reopen_pending(connection.id, pending)

    async def _give_up(self, connection: Connection) -> None:
        """The provider refused the code or answered unusably: the connection is over and
        says so (the user connects again) rather than staying PENDING for good."""
        failed = replace(
            connection, state=ConnectionState.NEEDS_REAUTH, updated_at=self._clock.now()
        )
        async with self._unit_of_work() as uow:
            await uow.connections.save(failed, None)

    def _with_tokens(
        self, connection: Connection, tokens: TokenSet, state: ConnectionState
    ) -> Connection:
        now = self._clock.now()
        lifetime = tokens.expires_in
        if lifetime is not None:
            lifetime = min(max(lifetime, 0), MAX_TOKEN_LIFETIME_SECONDS)
        return replace(
            connection,
            state=state,
            scopes=tuple(tokens.scope.split()) if tokens.scope else connection.scopes,
            expires_at=None if lifetime is None else now + timedelta(seconds=lifetime),
            updated_at=now,
            last_refresh_at=now,
        )

    @staticmethod
    def _credentials(tokens: TokenSet, previous: Credentials | None) -> Credentials:
        # A provider that does not rotate refresh tokens keeps the one it gave before.
        kept = previous.refresh_token if previous else ""
        return Credentials(
            access_token=tokens.access_token, refresh_token=tokens.refresh_token or kept
        )

    async def _owned(self, name: str) -> Connection:
        connection_id = connection_id_from_name(name)
        async with self._unit_of_work() as uow:
            connection = await uow.connections.get(connection_id)
        if connection is None:
            raise connection_not_found(name)
        return connection

    async def get(self, name: str) -> Connection:
        async with self._recorder.attempt(Action.CONNECTION_GET, name[:256]):
            return await self._owned(name)

    async def page(self, parent: str, size: int, token: str) -> tuple[list[Connection], str]:
        user_id = user_id_from_name(parent, current_call().principal.subject, "parent")
        limit = page_size(size)
        query = ["connections", user_id]
        before = time_id_cursor(decode_page_token(token, query))
        async with (
            self._recorder.attempt(Action.CONNECTIONS_LIST, f"users/{user_id}"),
            self._unit_of_work() as uow,
        ):
            found = await uow.connections.page(user_id, before, limit + 1)
        return page_of(found, limit, lambda last: time_id_token(last.created_at, last.id, query))

    async def owner_of(self, name: str) -> str | None:
        collection, _, connection_id = name.partition("/")
        if collection != "connections" or not connection_id:
            return None
        async with self._unit_of_work() as uow:
            connection = await uow.connections.get(connection_id)
        return f"users/{connection.user_id}" if connection else None

    async def credential(self, name: str) -> UpstreamCredential:
        """A valid upstream credential, refreshed first when it expires within the
        margin. Every read is audited with the caller."""
        connection_id = connection_id_from_name(name)
        async with self._recorder.attempt(Action.CREDENTIAL_READ, f"connections/{connection_id}"):
            connection = await self._owned(name)
            provider, secret = await self._provider(connection.provider)
            self._require_active(connection)
            async with self._unit_of_work() as uow:
                credentials = await uow.connections.credentials(connection.id)
            if credentials is None:
                raise connection_not_found(name)
            if provider.auth_type is AuthType.API_KEY:
                return UpstreamCredential(credentials.api_key, None, AuthType.API_KEY, "")
            if not self._expiring(connection):
                return UpstreamCredential(
                    credentials.access_token, connection.expires_at, AuthType.OAUTH2, "Bearer"
                )
            connection, credentials = await self._refresh(connection, provider, secret, force=False)
            return UpstreamCredential(
                credentials.access_token, connection.expires_at, AuthType.OAUTH2, "Bearer"
            )

    async def refresh(self, name: str) -> Connection:
        connection = await self._owned(name)
        provider, secret = await self._provider(connection.provider)
        if provider.auth_type is AuthType.API_KEY:
            raise FailedPrecondition(
                "NOT_REFRESHABLE", "API-key connections have nothing to refresh", domain=DOMAIN
            )
        self._require_active(connection)
        refreshed, _ = await self._refresh(connection, provider, secret, force=True)
        return refreshed

    def _require_active(self, connection: Connection) -> None:
        if connection.state is not ConnectionState.ACTIVE:
            raise FailedPrecondition(
                f"CONNECTION_{connection.state.name}",
                f"the connection is {connection.state.value}",
                domain=DOMAIN,
            )

    def _expiring(self, connection: Connection) -> bool:
        expires_at = connection.expires_at
        return expires_at is not None and expires_at - self._margin <= self._clock.now()

    async def _refresh(
        self,
        connection: Connection,
        provider: Provider,
        secret: StoredClientSecret,
        *,
        force: bool,
    ) -> tuple[Connection, Credentials]:
        """RFC 6749 §6, one at a time per connection across every replica."""
        async with self._lock.hold(connection.id):
            async with self._unit_of_work() as uow:
                current = await uow.connections.get(connection.id)
                credentials = await uow.connections.credentials(connection.id)
            if current is None or credentials is None:
                raise connection_not_found(connection.name)
            self._require_active(current)
            if current.last_refresh_at != connection.last_refresh_at:
                return current, credentials  # another caller refreshed while we waited
            if not force and not self._expiring(current):
                return current, credentials
            if not credentials.refresh_token:
                raise FailedPrecondition(
                    "NOT_REFRESHABLE", "the provider gave no refresh token", domain=DOMAIN
                )
            if not same_origin(current.credential_origin, provider.token_endpoint):
                raise _needs_reauth()  # never sent anywhere but where it was issued
            client_secret = secret.for_endpoint(provider.token_endpoint)
            details = {"provider": provider.slug}
            async with self._recorder.attempt(Action.CONNECTION_REFRESH, current.name, details):
                try:
                    tokens = await self._oauth.refresh(
                        provider, client_secret, credentials.refresh_token
                    )
                except OAuthError as error:
                    self._telemetry.provider_refreshed(provider.slug, "rejected")
                    if error.error == "invalid_grant":
                        async with self._unit_of_work() as uow:
                            await uow.connections.save(
                                replace(
                                    current,
                                    state=ConnectionState.NEEDS_REAUTH,
                                    updated_at=self._clock.now(),
                                ),
                                None,
                            )
                    raise _rejected(error, "REFRESH_REJECTED") from error
                except ProviderResponseInvalid as error:
                    # Nothing is written: the stored tokens stay as they were.
                    self._telemetry.provider_refreshed(provider.slug, "rejected")
                    raise _response_invalid(error) from error
                except ProviderUnreachable as exc:
                    self._telemetry.provider_refreshed(provider.slug, "unreachable")
                    raise _unreachable(exc) from exc
                self._telemetry.provider_refreshed(provider.slug, "succeeded")
                refreshed = self._with_tokens(current, tokens, ConnectionState.ACTIVE)
                fresh = self._credentials(tokens, credentials)
                async with self._unit_of_work() as uow:
                    await uow.connections.save(refreshed, fresh)
            return refreshed, fresh

    async def _revoke(
        self,
        connection: Connection,
        provider: Provider,
        secret: StoredClientSecret,
        credentials: Credentials,
    ) -> str:
        endpoint = provider.revocation_endpoint
        bound = same_origin(connection.credential_origin, endpoint)
        if not (bound and secret.sendable_to(endpoint)):
            return "other_origin"  # a token is never sent where it was not issued
        await self._oauth.revoke(
            provider, secret.for_endpoint(endpoint), credentials.refresh_token, "refresh_token"
        )
        return "true"

    async def delete(self, name: str) -> None:
        connection_id = connection_id_from_name(name)
        async with self._recorder.attempt(
            Action.CONNECTION_DELETE, f"connections/{connection_id}"
        ) as attempt:
            connection = await self._owned(name)
            provider, secret = await self._provider(connection.provider)
            revoked = "not_applicable"
            try:  # best effort: the credentials are wiped whatever the provider says
                async with self._unit_of_work() as uow:
                    credentials = await uow.connections.credentials(connection.id)
                endpoint = provider.revocation_endpoint
                if endpoint and credentials and credentials.refresh_token:
                    revoked = await self._revoke(connection, provider, secret, credentials)
            except (OAuthError, ProviderUnreachable):
                revoked = "false"
            except SealedValueUnreadable:
                revoked = "unreadable"
            attempt.details["upstream_revoked"] = revoked
            async with self._unit_of_work() as uow:
                await uow.connections.delete(connection.id)
