"""Trusted issuers and the service accounts their tokens' subjects act as: trusted,
listed, mapped and withdrawn by admins, each change audited. A JWKS URL must pass the
egress policy when it is registered (and again at each fetch); an inline JWKS must hold
at least one usable signing key."""

from __future__ import annotations

from dataclasses import dataclass

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.pagination import (
    decode_page_token,
    encode_page_token,
    id_cursor,
    page_of,
    page_size,
)
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.service_accounts import account_id_from_name, account_not_found
from keyhold.domain.identity.trusted_issuers import (
    ISSUER_ID,
    MAX_JWKS_JSON_LENGTH,
    MAX_JWKS_URL_LENGTH,
    MAX_MAPPINGS_PER_ISSUER,
    JwkSets,
    TrustedIssuer,
    invalid_issuer,
    issuer_id_from_name,
    issuer_not_found,
    mapping_not_found,
    valid_audience,
    valid_issuer_id,
)
from keyhold.domain.identity.workload_identity import (
    WorkloadMapping,
    subject_pattern,
    trusted_issuer_url,
)
from keyhold.domain.provider.egress import EgressPolicy, EgressRefused
from keyhold.domain.unit_of_work import UnitOfWork, UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class IssuerFields:
    """What an admin says a trusted issuer is."""

    issuer: str
    audience: str
    jwks_url: str = ""
    jwks_json: str = ""


class TrustedIssuers:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        jwk_sets: JwkSets,
        egress: EgressPolicy,
        recorder: AuditRecorder,
        clock: Clock,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._jwk_sets = jwk_sets
        self._egress = egress
        self._recorder = recorder
        self._clock = clock

    async def create(self, issuer_id: str, fields: IssuerFields) -> TrustedIssuer:
        trusted = TrustedIssuer(
            id=valid_issuer_id(issuer_id),
            issuer=trusted_issuer_url(fields.issuer),
            jwks_url=fields.jwks_url,
            jwks_json=fields.jwks_json,
            audience=valid_audience(fields.audience),
            created_at=self._clock.now(),
        )
        self._check_keys_source(trusted)
        details = {"issuer": trusted.issuer, "audience": trusted.audience}
        if trusted.jwks_url:
            details["jwks_url"] = trusted.jwks_url
        async with (
            self._recorder.attempt(Action.TRUSTED_ISSUER_CREATE, trusted.name, details),
            self._unit_of_work() as uow,
        ):
            await uow.trusted_issuers.add(trusted)
        return trusted

    def _check_keys_source(self, trusted: TrustedIssuer) -> None:
        if bool(trusted.jwks_url) == bool(trusted.jwks_json):
            raise InvalidArgument(
                "TRUSTED_ISSUER_INVALID",
                "give the issuer's keys as jwks_url or jwks_json, exactly one",
                [FieldViolation("trusted_issuer.jwks_url", "exactly one of it and jwks_json")],
                domain=DOMAIN,
            )
        if trusted.jwks_json:
            if len(trusted.jwks_json) > MAX_JWKS_JSON_LENGTH:
                raise invalid_issuer("trusted_issuer.jwks_json", "at most 65536 characters")
            self._jwk_sets.read(trusted.jwks_json)
            return
        if len(trusted.jwks_url) > MAX_JWKS_URL_LENGTH:
            raise invalid_issuer("trusted_issuer.jwks_url", "at most 2048 characters")
        try:
            self._egress.check_url(trusted.jwks_url)
        except EgressRefused as exc:
            raise InvalidArgument(
                "URL_NOT_ALLOWED",
                f"trusted_issuer.jwks_url is outside the egress policy: {exc}",
                [FieldViolation("trusted_issuer.jwks_url", str(exc))],
                domain=DOMAIN,
            ) from exc

    async def page(self, size: int, token: str) -> tuple[list[TrustedIssuer], str]:
        limit = page_size(size)
        after = id_cursor(decode_page_token(token, "trusted-issuers"), ISSUER_ID)
        async with self._unit_of_work(atomic=False) as uow:
            found = await uow.trusted_issuers.page(after, limit + 1)
        return page_of(found, limit, lambda last: encode_page_token(last.id, "trusted-issuers"))

    async def delete(self, name: str) -> None:
        issuer_id = issuer_id_from_name(name)
        async with (
            self._recorder.attempt(Action.TRUSTED_ISSUER_DELETE, f"trusted-issuers/{issuer_id}"),
            self._unit_of_work() as uow,
        ):
            if not await uow.trusted_issuers.delete(issuer_id):
                raise issuer_not_found(name)

    async def map(self, issuer_name: str, pattern: str, account: str) -> TrustedIssuer:
        issuer_id = issuer_id_from_name(issuer_name, "trusted_issuer")
        subjects = subject_pattern(pattern, "mapping.subject_pattern")
        account_id = account_id_from_name(account, "mapping.service_account")
        details = {"subject_pattern": subjects.text, "service_account": account}
        async with (
            self._recorder.attempt(
                Action.WORKLOAD_IDENTITY_MAP, f"trusted-issuers/{issuer_id}", details
            ),
            self._unit_of_work() as uow,
        ):
            trusted = await _found(uow, issuer_id)
            if await uow.service_accounts.get(account_id) is None:
                raise account_not_found(account)
            replaces = any(m.pattern == subjects for m in trusted.mappings)
            if not replaces and len(trusted.mappings) >= MAX_MAPPINGS_PER_ISSUER:
                raise FailedPrecondition(
                    "TOO_MANY_MAPPINGS",
                    f"an issuer has at most {MAX_MAPPINGS_PER_ISSUER} mappings; remove one first",
                    domain=DOMAIN,
                )
            await uow.trusted_issuers.map(
                issuer_id, WorkloadMapping(trusted.issuer, subjects, account_id)
            )
            return await _found(uow, issuer_id)

    async def unmap(self, issuer_name: str, pattern: str) -> TrustedIssuer:
        issuer_id = issuer_id_from_name(issuer_name, "trusted_issuer")
        subjects = subject_pattern(pattern, "subject_pattern")
        details = {"subject_pattern": subjects.text}
        async with (
            self._recorder.attempt(
                Action.WORKLOAD_IDENTITY_UNMAP, f"trusted-issuers/{issuer_id}", details
            ),
            self._unit_of_work() as uow,
        ):
            await _found(uow, issuer_id)
            if not await uow.trusted_issuers.unmap(issuer_id, subjects.text):
                raise mapping_not_found(subjects.text)
            return await _found(uow, issuer_id)


async def _found(uow: UnitOfWork, issuer_id: str) -> TrustedIssuer:
    trusted = await uow.trusted_issuers.get(issuer_id)
    if trusted is None:
        raise issuer_not_found(f"trusted-issuers/{issuer_id}")
    return trusted
