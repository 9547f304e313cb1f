"""What a client assertion (RFC 7523) must say to stand in for a secret."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity.client_assertions import (
    AssertionRules,
    accepted_assertion,
)

CLIENT = "svc_reports"
RULES = AssertionRules(
    audience="https://keyhold.internal", max_lifetime_seconds=300, leeway_seconds=30
)
NOW = 1_700_000_000


def _header(**changes: object) -> dict[str, object]:
    return {"alg": "ES256", "kid": "k1", **changes}


def _claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": RULES.audience,
        "iat": NOW - 10,
        "exp": NOW + 50,
        "jti": "a1b2c3",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def test_a_well_formed_assertion_is_accepted_with_its_key_and_jti() -> None:
    accepted = accepted_assertion(_header(), _claims(), CLIENT, RULES, NOW)
    assert (accepted.key_id, accepted.token_id, accepted.expires_at) == ("k1", "a1b2c3", NOW + 50)


def test_an_audience_list_naming_keyhold_is_accepted() -> None:
    claims = _claims(aud=["https://other", RULES.audience])
    assert accepted_assertion(_header(), claims, CLIENT, RULES, NOW).token_id == "a1b2c3"


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        (_header(alg="none"), _claims(), "ASSERTION_INVALID"),
        (_header(alg="HS256"), _claims(), "ASSERTION_INVALID"),
        (_header(kid=None), _claims(), "KEY_UNKNOWN"),
        (_header(kid="k" * 129), _claims(), "KEY_UNKNOWN"),
        (_header(), _claims(iss="svc_other"), "ASSERTION_INVALID"),
        (_header(), _claims(sub="svc_other"), "ASSERTION_INVALID"),
        (_header(), _claims(aud="https://elsewhere"), "ASSERTION_AUDIENCE"),
        (_header(), _claims(aud=None), "ASSERTION_AUDIENCE"),
        (_header(), _claims(aud=["x"] * 17 + [RULES.audience]), "ASSERTION_AUDIENCE"),
        (_header(), _claims(iat="yesterday"), "ASSERTION_INVALID"),
        (_header(), _claims(exp=True), "ASSERTION_INVALID"),
        (_header(), _claims(exp=float("nan")), "ASSERTION_INVALID"),
        (_header(), _claims(exp=float("inf")), "ASSERTION_INVALID"),
        (_header(), _claims(exp=NOW + 400), "ASSERTION_TOO_LONG_LIVED"),
        (_header(), _claims(iat=NOW - 200, exp=NOW - 31), "ASSERTION_EXPIRED"),
        (_header(), _claims(iat=NOW + 31, exp=NOW + 100), "ASSERTION_EXPIRED"),
        (_header(), _claims(jti=None), "ASSERTION_INVALID"),
        (_header(), _claims(jti="j" * 257), "ASSERTION_INVALID"),
    ],
)
def test_a_refused_assertion_says_why(
    header: dict[str, object], claims: dict[str, object], reason: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        accepted_assertion(header, claims, CLIENT, RULES, NOW)
    assert caught.value.reason == reason


def test_expiry_within_the_leeway_is_still_accepted() -> None:
    claims = _claims(iat=NOW - 100, exp=NOW - 29)
    assert accepted_assertion(_header(), claims, CLIENT, RULES, NOW).expires_at == NOW - 29


def test_fractional_dates_are_read_in_whole_seconds() -> None:
    claims = _claims(iat=NOW - 10.5, exp=NOW + 50.9)
    assert accepted_assertion(_header(), claims, CLIENT, RULES, NOW).expires_at == NOW + 50
