"""Which service account an external workload's token acts as, and what an admin may
trust and map."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import InvalidArgument
from keyhold.domain.identity.workload_identity import (
    WorkloadMapping,
    mapped_account,
    subject_pattern,
    trusted_issuer_url,
)

K8S = "https://kubernetes.default.svc"
SPIFFE = "https://spire.internal"


def _mapping(issuer: str, pattern: str, account: str) -> WorkloadMapping:
    return WorkloadMapping(issuer, subject_pattern(pattern), account)


MAPPINGS = [
    _mapping(K8S, "system:serviceaccount:reports:*", "reports-any"),
    _mapping(K8S, "system:serviceaccount:reports:api*", "reports-api"),
    _mapping(K8S, "system:serviceaccount:reports:api", "reports-api-exact"),
    _mapping(SPIFFE, "spiffe://internal/billing", "billing"),
]


@pytest.mark.parametrize(
    ("issuer", "subject", "account"),
    [
        (K8S, "system:serviceaccount:reports:api", "reports-api-exact"),
        (K8S, "system:serviceaccount:reports:api-worker", "reports-api"),
        (K8S, "system:serviceaccount:reports:cron", "reports-any"),
        (K8S, "system:serviceaccount:billing:api", None),
        (SPIFFE, "spiffe://internal/billing", "billing"),
        (SPIFFE, "spiffe://internal/billing/extra", None),
        (K8S, "spiffe://internal/billing", None),  # mapped under another issuer only
    ],
)
def test_the_most_specific_mapping_of_the_issuer_names_the_account(
    issuer: str, subject: str, account: str | None
) -> None:
    assert mapped_account(MAPPINGS, issuer, subject) == account


@pytest.mark.parametrize(
    "pattern", ["", "*", "a*b", "a**", "with space", "tab\there", "x" * 513, "ü"]
)
def test_a_bad_subject_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        subject_pattern(pattern)
    assert caught.value.reason == "WORKLOAD_IDENTITY_INVALID"


@pytest.mark.parametrize(
    "issuer",
    [
        "http://kubernetes.default.svc",
        "https://",
        "kubernetes.default.svc",
        "https://issuer.internal/?tenant=a",
        "https://issuer.internal/#x",
        "https://user:pass@issuer.internal",
        "https://" + "a" * 520,
    ],
)
def test_an_issuer_that_is_not_a_plain_https_url_is_refused(issuer: str) -> None:
    with pytest.raises(InvalidArgument):
        trusted_issuer_url(issuer)


def test_an_https_issuer_with_a_path_is_trusted_as_given() -> None:
    issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
    assert trusted_issuer_url(issuer) == issuer
