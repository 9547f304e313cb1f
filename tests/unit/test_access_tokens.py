"""The access-token verifier refuses everything RFC 8725 warns about."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.checkpoints import JwsCheckpointSigner
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.signing_keys import SigningKey
from keyhold.jose_canonical import P256_ORDER, with_low_s
from tests.support.fakes import FakeClock
from tests.support.jws import altered_trailing_bits, high_s_twin, signature_s, with_signature


class Fixture:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.stored: list[SigningKey] = [Es256KeyGenerator().generate(self.clock.now())]
        self.fetches = 0
        self.ring = KeyRing(self._fetch, min_reload_interval=60)
        self.ring.replace(self.stored)
        self.tokens = AccessTokens(
            self.ring,
            issuer="https://keyhold.test",
            audience="keyhold",
            lifetime_seconds=900,
            leeway_seconds=30,
            clock=self.clock,
        )

    async def _fetch(self) -> list[SigningKey]:
        self.fetches += 1
        return self.stored

    def forge(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        """`claims` signed with the ring's key, in canonical form as Keyhold signs."""
        signer = self.ring.signer
        token = jwt.encode(
            claims,
            signer.private_key,
            algorithm="ES256",
            headers={"kid": signer.key_id, "typ": "at+jwt", **(headers or {})},
        )
        return with_low_s(token)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = self.clock.timestamp()
        claims: dict[str, Any] = {
            "iss": "https://keyhold.test",
            "aud": "keyhold",
            "sub": "users/u1",
            "iat": now,
            "nbf": now,
            "exp": now + 900,
            "jti": "j1",
            "sid": "s1",
            "roles": ["user"],
            "scope": "",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


async def refused(fx: Fixture, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await fx.tokens.verify(token)
    return caught.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_issued_token_verifies_to_its_principal(fx: Fixture) -> None:
    issued = fx.tokens.issue(subject="users/u1", roles=["admin"], scopes=["a", "b"], session_id="s")
    principal = await fx.tokens.verify(issued.token)
    assert principal.type is PrincipalType.USER
    assert principal.subject == "users/u1"
    assert principal.roles == {"admin"}
    assert principal.scopes == {"a", "b"}
    assert principal.session_id == "s"
    assert principal.expires_at == issued.expires_at == fx.clock.timestamp() + 900
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "ES256"
    assert header["kid"] == fx.ring.signer.key_id


async def test_service_token_has_no_session(fx: Fixture) -> None:
    issued = fx.tokens.issue(subject="service-accounts/sa1", scopes=["audit.read"])
    principal = await fx.tokens.verify(issued.token)
    assert principal.type is PrincipalType.SERVICE
    assert principal.session_id is None


async def test_alg_none_is_refused(fx: Fixture) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": fx.ring.signer.key_id}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(fx.claims()).encode())}."
    assert await refused(fx, token) == "TOKEN_MALFORMED"


async def test_hs256_signed_with_the_public_key_is_refused(fx: Fixture) -> None:
    public_pem = fx.ring.signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": fx.ring.signer.key_id}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(fx.claims()).encode())}"
    import hashlib
    import hmac

    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert await refused(fx, f"{signing_input}.{_b64(signature)}") == "TOKEN_MALFORMED"


async def test_unknown_kid_is_refused_after_one_reload(fx: Fixture) -> None:
    token = fx.forge(fx.claims(), headers={"kid": "nosuchkey"})
    assert await refused(fx, token) == "TOKEN_KEY_UNKNOWN"
    assert (
        await refused(fx, fx.forge(fx.claims(), headers={"kid": "otherkey"})) == "TOKEN_KEY_UNKNOWN"
    )
    assert fx.fetches == 1  # the second unknown kid did not reload again within the interval


async def test_key_rotated_elsewhere_is_picked_up_by_reload(fx: Fixture) -> None:
    other = KeyRing(fx._fetch)
    new_key = Es256KeyGenerator().generate(fx.clock.now())
    other.replace([new_key])
    foreign_issuer = AccessTokens(
        other,
        issuer="https://keyhold.test",
        audience="keyhold",
        lifetime_seconds=900,
        leeway_seconds=30,
        clock=fx.clock,
    )
    token = foreign_issuer.issue(subject="users/u1", session_id="s").token
    fx.stored = [*fx.stored, new_key]
    principal = await fx.tokens.verify(token)
    assert principal.subject == "users/u1"
    assert fx.fetches == 1


@pytest.mark.parametrize("kid", ["../../etc/passwd", "k' OR '1'='1", "a/b", "", "x" * 65])
async def test_kid_with_path_or_sql_characters_is_refused(fx: Fixture, kid: str) -> None:
    assert await refused(fx, fx.forge(fx.claims(), headers={"kid": kid})) == "TOKEN_MALFORMED"
    assert fx.fetches == 0


async def test_expired_token_is_refused(fx: Fixture) -> None:
    token = fx.tokens.issue(subject="users/u1", session_id="s").token
    fx.clock.advance(900 + 31)
    assert await refused(fx, token) == "TOKEN_EXPIRED"


async def test_expired_token_is_refused_even_when_cached(fx: Fixture) -> None:
    token = fx.tokens.issue(subject="users/u1", session_id="s").token
    await fx.tokens.verify(token)
    fx.clock.advance(900 + 31)
    assert await refused(fx, token) == "TOKEN_EXPIRED"


async def test_leeway_allows_small_clock_skew(fx: Fixture) -> None:
    now = fx.clock.timestamp()
    await fx.tokens.verify(fx.forge(fx.claims(nbf=now + 20, iat=now + 20)))


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_future_nbf_or_iat_beyond_leeway_is_refused(fx: Fixture, claim: str) -> None:
    token = fx.forge(fx.claims(**{claim: fx.clock.timestamp() + 120}))
    assert await refused(fx, token) == "TOKEN_NOT_YET_VALID"


@pytest.mark.parametrize("audience", ["other", ["keyhold", "other"], "keyhol"])
async def test_wrong_audience_is_refused(fx: Fixture, audience: Any) -> None:
    assert await refused(fx, fx.forge(fx.claims(aud=audience))) == "TOKEN_AUDIENCE_MISMATCH"


@pytest.mark.parametrize(
    "issuer", ["https://evil.test", "https://keyhold.tes", "https://keyhold.test.evil", ""]
)
async def test_wrong_or_prefix_matching_issuer_is_refused(fx: Fixture, issuer: str) -> None:
    assert await refused(fx, fx.forge(fx.claims(iss=issuer))) == "TOKEN_ISSUER_MISMATCH"


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid"])
async def test_each_missing_required_claim_is_refused(fx: Fixture, claim: str) -> None:
    assert await refused(fx, fx.forge(fx.claims(**{claim: None}))) == "TOKEN_CLAIM_MISSING"


async def test_oversized_token_is_refused_before_decoding(fx: Fixture) -> None:
    token = fx.forge(fx.claims(padding="x" * 9000))
    assert await refused(fx, token) == "TOKEN_TOO_LARGE"


async def test_tampered_payload_is_refused(fx: Fixture) -> None:
    header, _, signature = fx.forge(fx.claims()).split(".")
    payload = _b64(json.dumps(fx.claims(roles=["admin"])).encode())
    assert await refused(fx, f"{header}.{payload}.{signature}") == "TOKEN_SIGNATURE_INVALID"


async def test_token_of_another_type_is_refused(fx: Fixture) -> None:
    token = fx.forge(fx.claims(), headers={"typ": "JWT"})
    assert await refused(fx, token) == "TOKEN_MALFORMED"


@pytest.mark.parametrize("subject", ["u1", "admins/x", "users/", "users/a/b"])
async def test_subject_must_name_a_principal(fx: Fixture, subject: str) -> None:
    assert await refused(fx, fx.forge(fx.claims(sub=subject))) == "TOKEN_MALFORMED"


async def test_session_check_runs_on_every_call(fx: Fixture) -> None:
    token = fx.tokens.issue(subject="users/u1", session_id="s9").token
    revoked: set[str] = set()

    class SessionsRevoked:
        async def check(self, principal: Principal) -> None:
            if principal.session_id in revoked:
                raise Unauthenticated("SESSION_REVOKED", "revoked")

        def known_live(self, principal: Principal) -> bool:
            return principal.session_id not in revoked

    fx.tokens = AccessTokens(
        fx.ring,
        issuer="https://keyhold.test",
        audience="keyhold",
        lifetime_seconds=900,
        leeway_seconds=30,
        clock=fx.clock,
        revocations=SessionsRevoked(),
    )
    assert fx.tokens.principal_without_waiting(token) is None  # never verified: it must be awaited
    principal = await fx.tokens.verify(token)
    assert (
        fx.tokens.principal_without_waiting(token) is principal
    )  # verified, and its session known live
    revoked.add("s9")
    assert fx.tokens.principal_without_waiting(token) is None
    assert await refused(fx, token) == "SESSION_REVOKED"


async def test_a_known_token_stops_being_known_when_it_expires(fx: Fixture) -> None:
    token = fx.tokens.issue(subject="users/u1", session_id="s9").token
    principal = await fx.tokens.verify(token)
    assert fx.tokens.principal_without_waiting(token) is principal
    fx.clock.advance(seconds=15 * 60 + 60)  # past the lifetime and the leeway
    assert fx.tokens.principal_without_waiting(token) is None
    assert await refused(fx, token) == "TOKEN_EXPIRED"
    assert fx.tokens.principal_without_waiting("x" * 9000) is None  # over-size: never looked up


async def test_a_high_s_twin_of_a_valid_token_is_refused(fx: Fixture) -> None:
    token = fx.tokens.issue(subject="users/u1", session_id="s").token
    twin = high_s_twin(token)
    signed = f"{twin.rpartition('.')[0]}".encode()
    r_s = base64.urlsafe_b64decode(twin.rpartition(".")[2] + "==")
    der = encode_dss_signature(int.from_bytes(r_s[:32], "big"), int.from_bytes(r_s[32:], "big"))
    fx.ring.signer.public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))  # it does verify
    assert await refused(fx, twin) == "TOKEN_NOT_CANONICAL"
    assert (await fx.tokens.verify(token)).subject == "users/u1"
    assert await refused(fx, twin) == "TOKEN_NOT_CANONICAL"  # not taken from the cache


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (lambda s: s + "==", "TOKEN_NOT_CANONICAL"),
        (altered_trailing_bits, "TOKEN_NOT_CANONICAL"),
        (lambda s: s[:40] + " " + s[40:], "TOKEN_MALFORMED"),
        (lambda s: s + "\n", "TOKEN_MALFORMED"),
        (lambda s: s.replace("-", "+").replace("_", "/"), "TOKEN_MALFORMED"),
    ],
    ids=["padded", "trailing-bits", "inner-space", "newline", "standard-alphabet"],
)
async def test_another_encoding_of_the_signature_is_refused(
    fx: Fixture, variant: Any, reason: str
) -> None:
    for _ in range(100):  # until the variant differs (a signature without - or _)
        token = fx.tokens.issue(subject="users/u1", session_id="s").token
        signature = token.rpartition(".")[2]
        if variant(signature) != signature:
            break
    other = with_signature(token, variant(signature))
    assert other != token
    assert await refused(fx, other) == reason
    assert (await fx.tokens.verify(token)).subject == "users/u1"


async def test_every_token_keyhold_signs_has_a_low_s(fx: Fixture) -> None:
    for index in range(200):  # a raw ECDSA signature has a high S half the time
        token = fx.tokens.issue(subject="users/u1", session_id=f"s{index}").token
        assert signature_s(token) <= P256_ORDER // 2
        assert (await fx.tokens.verify(token)).session_id == f"s{index}"


async def test_audit_checkpoints_are_signed_with_a_low_s(fx: Fixture) -> None:
    signer = JwsCheckpointSigner(fx.ring)
    for index in range(100):
        token, key_id = signer.sign({"sequence": index})
        assert key_id == fx.ring.signer.key_id
        assert signature_s(token) <= P256_ORDER // 2
        claims = jwt.decode(token, fx.ring.signer.public_key, algorithms=["ES256"])
        assert claims == {"sequence": index}
