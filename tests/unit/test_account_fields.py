"""The domain rules for a new account's fields: blank passwords, and email domains that
are not valid IDNA names or mix scripts within a label."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import InvalidArgument
from keyhold.domain.identity.email_domains import domain_problem
from keyhold.domain.identity.passwords import PasswordPolicy
from keyhold.domain.identity.users import normalize_email, normalize_new_email

POLICY = PasswordPolicy(frozenset({"password1234"}))


@pytest.mark.parametrize(
    "password",
    [" " * 12, "\t" * 20, "\u00a0" * 12, "\u3000" * 12, "\u200b" * 12, " \u200d\n" * 6],
    ids=["spaces", "tabs", "nbsp", "ideographic", "zero-width-space", "mixed-invisible"],
)
@pytest.mark.parametrize("field", ["password", "new_password"])
def test_a_blank_password_is_refused(password: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        POLICY.check(password, "ada@example.com", field)
    assert caught.value.reason == "PASSWORD_BLANK"
    assert [v.field for v in caught.value.violations] == [field]


@pytest.mark.parametrize(
    "password", ["correct horse battery", "   spaced   out   ", "\u00e9t\u00e9 \u00e0 paris!!"]
)
def test_passwords_with_something_visible_pass(password: str) -> None:
    POLICY.check(password, "ada@example.com")


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "sub-domain.example.co.uk",
        "b\u00fccher.example",  # Latin with a diacritic
        "xn--bcher-kva.example",  # the same as A-labels
        "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",  # Cyrillic labels
        "\u043f\u0440\u0438\u043c\u0435\u0440.com",  # one script per label
        "\u4f8b\u3048.\u30c6\u30b9\u30c8",  # Han with Hiragana, Katakana
        "abc\u6f22\u5b57.jp",  # Latin with Han
        "\ud55c\uad6d\u6f22.kr",  # Hangul with Han
        "l\u00b7l.cat",  # Catalan middle dot between Latin letters
        "\u03b1\u03b2\u03b3.gr",
        "1-2-3.example",
    ],
)
def test_valid_domains_pass(domain: str) -> None:
    assert domain_problem(domain) is None


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("p\u0430ypal.com", "mixes scripts"),  # Cyrillic a among Latin
        ("xn--pypal-4ve.com", "mixes scripts"),  # the same, as an A-label
        ("abc\u03b1.gr", "mixes scripts"),  # Greek alpha after Latin
        ("\u043f\u0440\u6f22.example", "mixes scripts"),  # Cyrillic with Han
        ("\u0430pple\u0435.com", "mixes scripts"),
        ("exa_mple.com", "not a valid"),
        ("-example.com", "not a valid"),
        ("ex--ample.com", "not a valid"),
        ("xn--abc.com", "not a valid"),
        ("a..com", "not a valid"),
        ("a" * 64 + ".com", "not a valid"),
        ("\u2603.example", "not a valid"),  # a snowman is no letter
        ("\uff45xample.com", "write the domain as example.com"),  # fullwidth e
        ("\u212bngstr\u00f6m.example", "write the domain as"),  # Angstrom sign, not Å
    ],
)
def test_invalid_or_mixed_domains_are_refused(domain: str, problem: str) -> None:
    found = domain_problem(domain)
    assert found is not None
    assert problem in found


def test_a_new_address_must_pass_the_domain_rules_but_lookups_need_not() -> None:
    spoof = "Ada@P\u0430ypal.com"
    with pytest.raises(InvalidArgument) as caught:
        normalize_new_email(spoof)
    assert caught.value.reason == "EMAIL_INVALID"
    assert [v.field for v in caught.value.violations] == ["email"]
    assert normalize_email(spoof) == "ada@p\u0430ypal.com"  # a lookup finds nothing, as before
    assert normalize_new_email(" Ada@B\u00fccher.Example ") == "ada@b\u00fccher.example"
