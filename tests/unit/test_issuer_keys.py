"""Trusted issuers' published keys: kept for the answer's max-age within bounds, fetched
again for a key first seen at most once per interval, kept through an outage, and an
inline JWK Set read once. The egress transport is replaced by a scripted one here; the
end-to-end tests (tests/e2e/test_workload_identity.py) fetch over TLS through it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from keyhold.adapters.crypto.jwk_sets import PyJwtJwkSets
from keyhold.adapters.oauth.issuer_keys import PublishedIssuerKeys
from keyhold.domain.errors import InvalidArgument, Unavailable
from keyhold.domain.identity.trusted_issuers import TrustedIssuer
from keyhold.domain.provider.egress import EgressPolicy

URL = "https://issuer.example/jwks"


def _ec(kid: str, **extra: Any) -> dict[str, Any]:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(ECAlgorithm.to_jwk(public)), "kid": kid, **extra}


class Issuer:
    """Answers the JWKS requests, counting them."""

    def __init__(self) -> None:
        self.keys = [_ec("a")]
        self.cache_control = "max-age=600"
        self.status = 200
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(
            self.status,
            headers={"cache-control": self.cache_control},
            stream=httpx.ByteStream(json.dumps({"keys": self.keys}).encode()),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trusted(**fields: Any) -> TrustedIssuer:
    values: dict[str, Any] = {
        "id": "eks",
        "issuer": "https://issuer.example",
        "jwks_url": URL,
        "jwks_json": "",
        "audience": "keyhold",
        "created_at": datetime.now(UTC),
        **fields,
    }
    return TrustedIssuer(**values)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(issuer: Issuer, clock: Clock) -> PublishedIssuerKeys:
    return PublishedIssuerKeys(
        httpx.MockTransport(issuer), EgressPolicy(), PyJwtJwkSets(), monotonic=clock
    )


async def test_keys_are_kept_for_their_max_age(
    keys: PublishedIssuerKeys, issuer: Issuer, clock: Clock
) -> None:
    found = await keys.key(_trusted(), "a")
    assert found is not None
    assert found.algorithm == "ES256"
    clock.now += 599
    assert await keys.key(_trusted(), "a") == found
    assert issuer.requests == 1
    clock.now += 2
    assert await keys.key(_trusted(), "a") == found
    assert issuer.requests == 2


@pytest.mark.parametrize(
    ("cache_control", "kept_for"),
    [("max-age=5", 60.0), ("no-store", 60.0), ("max-age=99999999", 86_400.0), ("", 300.0)],
)
async def test_max_age_is_held_within_bounds(
    keys: PublishedIssuerKeys, issuer: Issuer, clock: Clock, cache_control: str, kept_for: float
) -> None:
    issuer.cache_control = cache_control
    await keys.key(_trusted(), "a")
    clock.now += kept_for - 1
    await keys.key(_trusted(), "a")
    assert issuer.requests == 1
    clock.now += 2
    await keys.key(_trusted(), "a")
    assert issuer.requests == 2


async def test_a_key_first_seen_is_fetched_at_most_once_an_interval(
    keys: PublishedIssuerKeys, issuer: Issuer, clock: Clock
) -> None:
    await keys.key(_trusted(), "a")
    issuer.keys.append(_ec("b"))
    assert await keys.key(_trusted(), "b") is None  # within the interval: not fetched
    assert await keys.key(_trusted(), "made-up") is None
    assert issuer.requests == 1
    clock.now += 61
    assert await keys.key(_trusted(), "b") is not None
    assert await keys.key(_trusted(), "made-up") is None
    assert issuer.requests == 2


async def test_known_keys_outlive_an_outage(
    keys: PublishedIssuerKeys, issuer: Issuer, clock: Clock
) -> None:
    await keys.key(_trusted(), "a")
    issuer.status = 503
    clock.now += 700
    assert await keys.key(_trusted(), "a") is not None
    assert issuer.requests == 2
    clock.now += 30  # the failed fetch counts: no new attempt within the interval
    assert await keys.key(_trusted(), "a") is not None
    assert issuer.requests == 2


async def test_keys_never_fetched_make_the_call_unavailable(
    keys: PublishedIssuerKeys, issuer: Issuer
) -> None:
    issuer.status = 500
    with pytest.raises(Unavailable) as caught:
        await keys.key(_trusted(), "a")
    assert caught.value.reason == "ISSUER_KEYS_UNAVAILABLE"


async def test_a_url_outside_the_egress_policy_is_not_fetched(
    keys: PublishedIssuerKeys, issuer: Issuer
) -> None:
    with pytest.raises(Unavailable):
        await keys.key(_trusted(jwks_url="https://10.0.0.1/jwks"), "a")
    assert issuer.requests == 0


async def test_an_inline_set_is_read_without_a_fetch(
    keys: PublishedIssuerKeys, issuer: Issuer
) -> None:
    inline = json.dumps({"keys": [_ec("x")]})
    assert await keys.key(_trusted(jwks_url="", jwks_json=inline), "x") is not None
    assert issuer.requests == 0


def test_a_set_keeps_public_signing_keys_with_their_algorithm() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    document = {
        "keys": [
            _ec("es"),
            {**json.loads(OKPAlgorithm.to_jwk(ed)), "kid": "ed"},
            _ec("enc", use="enc"),
            _ec("wrong-alg", alg="RS256"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**_ec("private"), "d": "AAAA"},
            _ec(""),
            "not a key",
        ]
    }
    read = PyJwtJwkSets().read(json.dumps(document))
    assert {kid: key.algorithm for kid, key in read.items()} == {"es": "ES256", "ed": "EdDSA"}


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"keys": {}}', '{"keys": []}', "{", "[" * 60_000, '{"keys": ' + "[" * 60_000],
)
def test_a_set_without_a_usable_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        PyJwtJwkSets().read(text)
    assert caught.value.reason == "TRUSTED_ISSUER_INVALID"
