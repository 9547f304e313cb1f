"""Keyless workload identity: tokens from issuers an admin trusts (a Kubernetes
projected service-account token, a SPIFFE JWT-SVID) stand in for a service account's
secret when their subject is mapped to it (docs/security.md).

A mapping names an issuer and a subject pattern: a whole subject, or a prefix ending in
`*`. When several match, the most specific wins: a whole subject over any prefix, a
longer prefix over a shorter one.

A workload token is a bearer credential its workload presents again at each renewal
until it expires (Kubernetes rotates the file, SPIRE re-issues the SVID), so it has no
replay rule; its lifetime is bounded instead, and its audience must be the one the
admin configured for the issuer, which names Keyhold alone."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from keyhold.domain.errors import FieldViolation, InvalidArgument, Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.client_assertions import names_audience, numeric_date, refused

MAX_ISSUER_LENGTH = 512
MAX_PATTERN_LENGTH = 512
# Printable ASCII without spaces: Kubernetes (system:serviceaccount:ns:name) and SPIFFE
# (spiffe://trust-domain/path) subjects both fit.
_SUBJECT = re.compile(r"^[\x21-\x7e]+\Z")


@dataclass(frozen=True, slots=True)
class SubjectPattern:
    text: str

    @property
    def is_prefix(self) -> bool:
        return self.text.endswith("*")

    def matches(self, subject: str) -> bool:
        if self.is_prefix:
            return subject.startswith(self.text[:-1])
        return subject == self.text

    @property
    def specificity(self) -> tuple[bool, int]:
        return (not self.is_prefix, len(self.text))


@dataclass(frozen=True, slots=True)
class WorkloadMapping:
    issuer: str
    pattern: SubjectPattern
    account_id: str


def trusted_issuer_url(issuer: str, field: str = "trusted_issuer.issuer") -> str:
    """An issuer URL an admin may trust: https, with a host, no query or fragment."""
    parts = urlsplit(issuer) if len(issuer) <= MAX_ISSUER_LENGTH else None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise _invalid(field, "an https URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _invalid(field, "no query, fragment or credentials")
    return issuer


def subject_pattern(text: str, field: str = "workload_identity.subject_pattern") -> SubjectPattern:
    if not 0 < len(text) <= MAX_PATTERN_LENGTH or not _SUBJECT.match(text):
        raise _invalid(field, f"1 to {MAX_PATTERN_LENGTH} printable characters, no spaces")
    if "*" in text[:-1] or text == "*":
        raise _invalid(field, "a whole subject, or a non-empty prefix ending in one *")
    return SubjectPattern(text)


def mapped_account(mappings: Iterable[WorkloadMapping], issuer: str, subject: str) -> str | None:
    """The service account `subject` of `issuer` acts as, or None when unmapped."""
    matching = [m for m in mappings if m.issuer == issuer and m.pattern.matches(subject)]
    if not matching:
        return None
    return max(matching, key=lambda mapping: mapping.pattern.specificity).account_id


@dataclass(frozen=True, slots=True)
class WorkloadTokenRules:
    max_lifetime_seconds: int
    leeway_seconds: int


def accepted_subject(
    claims: Mapping[str, object],
    issuer: str,
    audience: str,
    rules: WorkloadTokenRules,
    now: int,
) -> str:
    """The subject of a workload token whose signature checked out, if its claims say it
    is for `audience`, from `issuer`, and current."""
    if claims.get("iss") != issuer:
        raise refused("ASSERTION_INVALID", "the token's iss is not its issuer's")
    if not names_audience(claims.get("aud"), audience):
        raise refused("ASSERTION_AUDIENCE", "the token is not addressed to Keyhold")
    expires_at = numeric_date(claims.get("exp"))
    if expires_at is None:
        raise refused("ASSERTION_INVALID", "exp must be a numeric date")
    issued_at = numeric_date(claims.get("iat"))
    not_before = numeric_date(claims.get("nbf"))
    starts = now if issued_at is None else issued_at
    if expires_at - starts > rules.max_lifetime_seconds:
        raise refused("ASSERTION_TOO_LONG_LIVED", "the token lives too long")
    future = max(issued_at or 0, not_before or 0)
    if expires_at <= now - rules.leeway_seconds or future > now + rules.leeway_seconds:
        raise refused("ASSERTION_EXPIRED", "the token is expired or not yet valid")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_PATTERN_LENGTH:
        raise refused("ASSERTION_INVALID", "the token needs a sub")
    return subject


def issuer_untrusted() -> Unauthenticated:
    return refused("ISSUER_UNTRUSTED", "the token's issuer is not trusted")


def workload_unmapped() -> Unauthenticated:
    return refused("WORKLOAD_UNMAPPED", "the token's subject acts as no service account")


def _invalid(field: str, expected: str) -> InvalidArgument:
    return InvalidArgument(
        "WORKLOAD_IDENTITY_INVALID",
        f"{field} is not valid",
        [FieldViolation(field, f"expected {expected}")],
        domain=DOMAIN,
    )
