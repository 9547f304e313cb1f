"""Origins, exact redirect matching and token answers, at the edges."""

from __future__ import annotations

import math
from typing import Any

import pytest

from keyhold.adapters.oauth.token_response import oauth_error, token_set
from keyhold.domain.errors import InvalidArgument
from keyhold.domain.provider.oauth import MAX_TOKEN_LIFETIME_SECONDS, ProviderResponseInvalid
from keyhold.domain.provider.origins import origin_of, same_origin
from keyhold.domain.provider.redirects import require_allowed


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Bank.Example.com/token", "https://bank.example.com:443"),
        ("https://bank.example.com:443/x?y#z", "https://bank.example.com:443"),
        ("https://bank.example.com:8443/token", "https://bank.example.com:8443"),
        ("http://127.0.0.1:9/token", "http://127.0.0.1:9"),
        ("https://[::1]/token", "https://[::1]:443"),
        ("https://bank.example.com:99999/token", ""),
        ("not a url", ""),
        ("", ""),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def test_no_origin_matches_an_empty_one() -> None:
    assert not same_origin("", "")
    assert not same_origin("", "not a url")
    assert not same_origin("https://bank.example.com:443", "https://bank.example.com.evil/")
    assert not same_origin("https://bank.example.com:443", "http://bank.example.com:443/")
    assert same_origin("https://bank.example.com:443", "https://BANK.example.com/revoke")


def test_redirect_uris_match_character_for_character() -> None:
    allowed = ("https://app.example.com/callback",)
    assert require_allowed(allowed[0], allowed, "redirect_uri") == allowed[0]
    for near in ("https://app.example.com/callback/", "https://app.example.com/Callback"):
        with pytest.raises(InvalidArgument) as caught:
            require_allowed(near, allowed, "redirect_uri")
        assert caught.value.reason == "REDIRECT_URI_NOT_ALLOWED"
    with pytest.raises(InvalidArgument):
        require_allowed(allowed[0], (), "redirect_uri")


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [
        (None, None),
        (0, 0),
        (-1, 0),
        (-math.inf, 0),
        (math.inf, MAX_TOKEN_LIFETIME_SECONDS),
        (10**400, MAX_TOKEN_LIFETIME_SECONDS),
        ("9" * 5000, MAX_TOKEN_LIFETIME_SECONDS),
        ("120", 120),
        (120.7, 120),
    ],
)
def test_lifetimes_are_clamped(expires_in: Any, seconds: int | None) -> None:
    assert token_set({"access_token": "a", "expires_in": expires_in}).expires_in == seconds


@pytest.mark.parametrize("expires_in", [math.nan, True, False, "12s", "-5", "٣", [], {}])
def test_lifetimes_that_are_not_numbers_are_refused(expires_in: Any) -> None:
    with pytest.raises(ProviderResponseInvalid) as caught:
        token_set({"access_token": "a", "expires_in": expires_in})
    assert caught.value.field == "expires_in"


def test_error_answers_are_short_and_printable() -> None:
    error = oauth_error({"error": "\x1b[31m" + "e" * 10_000, "error_description": "\x00" * 9999})
    assert len(error.error) <= 64
    assert error.error.isprintable()
    assert len(error.description) <= 256
    assert error.description.isprintable()
    assert oauth_error({"error": {"a": 1}}).error == "dict"
    assert oauth_error({}).error == "invalid_response"
