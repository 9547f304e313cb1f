"""Service accounts and the client-credentials grant (RFC 6749 §4.4)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, replace

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.client_authentication import ClientAuthentication
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.secrets import new_secret
from keyhold.application.identity.users import validated_mask
from keyhold.application.pagination import (
    decode_page_token,
    page_of,
    page_size,
    time_id_cursor,
    time_id_token,
)
from keyhold.application.telemetry import NO_TELEMETRY, Telemetry
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import (
    PermissionDenied,
)
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.api_resources import audience_unknown
from keyhold.domain.identity.scopes import validate_scopes
from keyhold.domain.identity.service_accounts import (
    ServiceAccount,
    account_id_from_name,
    account_not_found,
)
from keyhold.domain.identity.users import validate_display_name
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import AccessTokenIssuer, IssuedToken
from keyhold.domain.unit_of_work import UnitOfWorkFactory

CLIENT_SECRET_PREFIX = "khs_"  # noqa: S105 - a prefix, not a secret
CLIENT_ID_PREFIX = "khc_"


@dataclass(frozen=True, slots=True)
class ServiceToken:
    token: IssuedToken
    scopes: frozenset[str]
    audience: str


_UPDATABLE = {"display_name", "refuses_secrets"}


class ServiceAccounts:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        clients: ClientAuthentication,
        tokens: AccessTokenIssuer,
        recorder: AuditRecorder,
        revocations: Revocations,
        clock: Clock,
        audience: str,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        """`audience`: Keyhold's own, whose scopes are the accounts' `scopes`."""
        self._audience = audience
        self._telemetry = telemetry
        self._unit_of_work = unit_of_work
        self._clients = clients
        self._tokens = tokens
        self._recorder = recorder
        self._revocations = revocations
        self._clock = clock

    async def create(self, display_name: str, scopes: list[str]) -> tuple[ServiceAccount, str]:
        """The account and its client secret, which is shown this once and stored only
        as a hash."""
        display_name = validate_display_name(display_name)
        granted = validate_scopes(scopes)
        secret, hashed = new_secret(CLIENT_SECRET_PREFIX)
        account = ServiceAccount(
            id=uuid.uuid4().hex,
            client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(16),
            display_name=display_name,
            scopes=granted,
            secret_hash=hashed,
            created_at=self._clock.now(),
        )
        details = {"scopes": ",".join(sorted(granted)), "client_id": account.client_id}
        async with (
            self._recorder.attempt(Action.SERVICE_ACCOUNT_CREATE, account.name, details),
            self._unit_of_work() as uow,
        ):
            await uow.service_accounts.add(account)
        return account, secret

    async def page(self, size: int, token: str) -> tuple[list[ServiceAccount], str]:
        limit = page_size(size)
        after = time_id_cursor(decode_page_token(token, "service-accounts"))
        async with self._unit_of_work() as uow:
            found = await uow.service_accounts.page(after, limit + 1)
        return page_of(
            found, limit, lambda last: time_id_token(last.created_at, last.id, "service-accounts")
        )

    async def update(
        self, name: str, display_name: str, refuses_secrets: bool, mask: list[str]
    ) -> ServiceAccount:
        """UpdateServiceAccount: the fields `mask` names of `display_name` and
        `refuses_secrets`."""
        account_id = account_id_from_name(name, "service_account.name")
        fields = validated_mask(mask, _UPDATABLE)
        if "display_name" in fields:
            display_name = validate_display_name(display_name, "service_account.display_name")
        details = {"fields": ",".join(sorted(fields))}
        async with (
            self._recorder.attempt(Action.SERVICE_ACCOUNT_UPDATE, name, details),
            self._unit_of_work() as uow,
        ):
            account = await uow.service_accounts.get(account_id)
            if account is None:
                raise account_not_found(name)
            updated = replace(
                account,
                display_name=display_name if "display_name" in fields else account.display_name,
                refuses_secrets=(
                    refuses_secrets if "refuses_secrets" in fields else account.refuses_secrets
                ),
            )
            await uow.service_accounts.update(updated)
        return updated

    async def delete(self, name: str) -> None:
        account_id = account_id_from_name(name)
        async with self._recorder.attempt(Action.SERVICE_ACCOUNT_DELETE, name):
            async with self._unit_of_work() as uow:
                if not await uow.service_accounts.delete(account_id):
                    raise account_not_found(name)
            await self._revocations.account_ended(f"service-accounts/{account_id}")

    async def authenticated(
        self, client_id: str, client_secret: str, client_assertion: str = ""
    ) -> Principal:
        """The account, as a caller of Keyhold itself, when the credential proves it: for
        a transport that authenticates clients directly (HTTP client authentication)."""
        account = await self._clients.account(client_id, client_secret, client_assertion)
        return Principal(
            PrincipalType.SERVICE, account.name, scopes=account.scopes, audience=self._audience
        )

    async def issue_token(
        self,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        audience: str = "",
        client_assertion: str = "",
        subject_token: str = "",
    ) -> ServiceToken:
        """A token for `audience` (Keyhold's own when empty) carrying the scopes asked
        for, or all the account is granted there when none are; the account proved by
        its secret, a client assertion or a trusted issuer's token."""
        audience = audience or self._audience
        details = {"client_id": client_id[:64], "audience": audience[:256]}
        if client_assertion:
            details["credential"] = "client_assertion"
        elif subject_token:
            details["credential"] = "subject_token"
        async with self._recorder.attempt(Action.SERVICE_TOKEN_CREATE, "", details) as attempt:
            account = await self._clients.account(
                client_id, client_secret, client_assertion, subject_token
            )
            attempt.resource_name = account.name
            own = audience == self._audience
            if own:
                requested, held = validate_scopes(scopes), account.scopes
            else:
                requested, held = frozenset(scopes), await self._granted_at(account, audience)
            # Keyhold's own tokens identify the account even with no scope (WhoAmI, or
            # ExchangeToken's caller); another service's only with a grant there.
            if not requested <= held or not (own or held):
                missing = sorted(requested - held) or ["any scope of this audience"]
                raise PermissionDenied(
                    "SCOPE_NOT_GRANTED",
                    f"not granted to this account: {', '.join(missing[:10])}",
                    domain=DOMAIN,
                )
            granted = requested or held
            attempt.details["scopes"] = ",".join(sorted(granted))
            token = self._tokens.issue(subject=account.name, scopes=granted, audience=audience)
            self._telemetry.token_issued("service")
        return ServiceToken(token, granted, audience)

    async def _granted_at(self, account: ServiceAccount, audience: str) -> frozenset[str]:
        """What `account` is granted on the API resource whose audience is `audience`."""
        async with self._unit_of_work(atomic=False) as uow:
            held = await uow.grants.account_scopes_at(account.id, audience)
        if held is None:
            raise audience_unknown()
        return held
