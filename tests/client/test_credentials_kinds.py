"""The three ways a service account proves itself (client secret, signed client
assertion, a trusted issuer's token read from a file), each for the audience asked."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyhold.application.identity.api_resources import Definition
from keyhold.client import ServiceAccountCredentials
from keyhold.client.client_assertion import ClientAssertionSigner
from keyhold.client.token_file import TokenFile
from keyhold.server import KeyholdServer
from tests.client.fake_keyhold import FakeIdentity, fake_keyhold
from tests.support.servers import running_server, settings_for
from tests.support.status import rich_error

ISSUER = "https://keyhold.example.test"
REPORTS = Definition(
    "Reports",
    "reports.internal",
    {"reports.read": "read reports", "reports.write": "write reports"},
    {},
)
Server = tuple[KeyholdServer, grpc.aio.Channel]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(settings_for(tmp_path, issuer=ISSUER)) as running:
        yield running


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_secret_credentials_obtain_a_token_for_the_audience_asked(server: Server) -> None:
    app, channel = server
    await app.identity.api_resources.create("reports", REPORTS)
    account, secret = await app.identity.service_accounts.create("front", [])
    await app.identity.api_resources.grant_scopes(
        account.name, "api-resources/reports", ["reports.read", "reports.write"]
    )
    for credentials in (
        ServiceAccountCredentials.from_secret(
            account.client_id, secret, ["reports.read"], audience="reports.internal"
        ),
        ServiceAccountCredentials(
            account.client_id, secret, ["reports.read"], audience="reports.internal"
        ),
    ):
        credentials.bind(channel)
        claims = _claims(await credentials.token())
        assert (claims["sub"], claims["aud"], claims["scope"]) == (
            account.name,
            "reports.internal",
            "reports.read",
        )
    own = ServiceAccountCredentials.from_secret(account.client_id, secret)
    own.bind(channel)
    assert _claims(await own.token())["aud"] != "reports.internal"


def _ed25519() -> Any:
    return ed25519.Ed25519PrivateKey.generate()


def _p256() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def _rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _public_jwk(key: Any, algorithm: str, key_id: str) -> str:
    public = key.public_key()
    if algorithm == "EdDSA":
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    elif algorithm == "ES256":
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    return json.dumps({**jwk, "kid": key_id, "alg": algorithm})


@pytest.mark.parametrize(
    ("make_key", "algorithm", "as_pem"),
    [
        (_ed25519, "EdDSA", True),
        (_p256, "ES256", False),
        (_p256, "ES256", True),
        (_rsa, "RS256", False),
    ],
)
async def test_private_key_credentials_sign_a_fresh_assertion_at_each_renewal(
    server: Server, make_key: Any, algorithm: str, as_pem: bool
) -> None:
    app, channel = server
    await app.identity.api_resources.create("reports", REPORTS)
    account, _ = await app.identity.service_accounts.create("keyless", [])
    await app.identity.api_resources.grant_scopes(
        account.name, "api-resources/reports", ["reports.read"]
    )
    key = make_key()
    await app.identity.account_keys.add(account.name, _public_jwk(key, algorithm, "k1"))
    now = [0.0]
    credentials = ServiceAccountCredentials.from_private_key(
        account.client_id,
        _pem(key) if as_pem else key,
        "k1",
        keyhold_issuer=ISSUER,
        audience="reports.internal",
        monotonic=lambda: now[0],
    )
    credentials.bind(channel)
    first = _claims(await credentials.token())
    assert (first["sub"], first["aud"], first["scope"]) == (
        account.name,
        "reports.internal",
        "reports.read",
    )
    now[0] += 3600  # past renewal: a second assertion, which must not be a replay
    second = _claims(await credentials.token())
    assert credentials.requests == 2
    assert second["jti"] != first["jti"]


async def test_private_key_credentials_name_the_issuer_they_are_given(server: Server) -> None:
    app, channel = server
    account, _ = await app.identity.service_accounts.create("keyless", [])
    key = _p256()
    await app.identity.account_keys.add(account.name, _public_jwk(key, "ES256", "k1"))
    credentials = ServiceAccountCredentials.from_private_key(
        account.client_id, key, "k1", keyhold_issuer="keyhold"
    )
    credentials.bind(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await credentials.token()
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ASSERTION_AUDIENCE")


@pytest.mark.parametrize(
    ("make_key", "algorithm"), [(_ed25519, "EdDSA"), (_p256, "ES256"), (_rsa, "RS256")]
)
def test_an_assertion_says_what_keyhold_requires(make_key: Any, algorithm: str) -> None:
    key = make_key()
    signer = ClientAssertionSigner("khc_1", _pem(key).decode(), "k7", ISSUER, clock=lambda: 1e9)
    one, two = signer.sign(), signer.sign()
    header = jwt.get_unverified_header(one)
    assert (header["alg"], header["kid"]) == (algorithm, "k7")
    claims = jwt.decode(
        one, key.public_key(), [algorithm], audience=ISSUER, options={"verify_exp": False}
    )
    assert (claims["iss"], claims["sub"], claims["iat"], claims["exp"]) == (
        "khc_1",
        "khc_1",
        1_000_000_000,
        1_000_000_060,
    )
    assert len(claims["jti"]) >= 32
    assert claims["jti"] != _claims(two)["jti"]


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "must be on P-256"),
        (
            lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505
            "at least 2048 bits",
        ),
        (lambda: b"not a key", "PEM"),
        (lambda: "not a key either", "PEM"),
    ],
)
def test_keys_keyhold_would_refuse_are_refused_at_once(make_key: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceAccountCredentials.from_private_key("khc_1", make_key(), "k1", keyhold_issuer=ISSUER)


async def test_a_token_file_is_sent_as_is_and_its_rotation_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("projected-one\n")
    servicer = FakeIdentity(lifetime_seconds=120)
    now = [0.0]
    credentials = ServiceAccountCredentials.from_token_file(
        path, ["reports.read"], audience="reports.internal", monotonic=lambda: now[0]
    )
    async with fake_keyhold(servicer) as channel:
        credentials.bind(channel)
        assert await credentials.token() == "service-1"
        path.write_text("projected-two-rotated")
        assert await credentials.token() == "service-1"  # still fresh: no renewal
        now[0] += 100
        assert await credentials.token() == "service-2"
    sent = [
        (r.client_id, r.client_secret, r.client_assertion, r.subject_token)
        for r in servicer.token_requests
    ]
    assert sent == [("", "", "", "projected-one"), ("", "", "", "projected-two-rotated")]
    assert {(tuple(r.scopes), r.audience) for r in servicer.token_requests} == {
        (("reports.read",), "reports.internal")
    }


async def test_an_unchanged_token_file_is_not_read_again(tmp_path: Path) -> None:
    """Same size, same inode, the old mtime put back: the content read before is sent."""
    path = tmp_path / "token"
    path.write_text("aaaa")
    before = os.stat(path)
    servicer = FakeIdentity(lifetime_seconds=120)
    now = [0.0]
    credentials = ServiceAccountCredentials.from_token_file(
        path, client_id="khc_1", monotonic=lambda: now[0]
    )
    async with fake_keyhold(servicer) as channel:
        credentials.bind(channel)
        await credentials.token()
        path.write_text("bbbb")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        now[0] += 100
        await credentials.token()
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        now[0] += 100
        await credentials.token()
    assert [(r.client_id, r.subject_token) for r in servicer.token_requests] == [
        ("khc_1", "aaaa"),
        ("khc_1", "aaaa"),
        ("khc_1", "bbbb"),
    ]


async def test_a_symlink_swap_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    """How the kubelet rotates a projected token: `..data` is re-pointed atomically."""
    first, second = tmp_path / "2024_1", tmp_path / "2024_2"
    for directory, content in ((first, "token-1"), (second, "token-2")):
        directory.mkdir()
        (directory / "token").write_text(content)
        os.utime(directory / "token", ns=(0, 1_700_000_000_000_000_000))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "token").symlink_to("..data/token")
    file = TokenFile(tmp_path / "token")
    assert (await file.current(), await file.current(), file.reads) == ("token-1", "token-1", 1)
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert (await file.current(), file.reads) == ("token-2", 2)


@pytest.mark.parametrize("content", [b"", b"  \n", b"x" * 16385])
async def test_a_token_file_that_holds_no_usable_token_is_refused(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"empty|more than 16384 bytes"):
        await TokenFile(path).current()
