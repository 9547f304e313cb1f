"""Public keys on a service account (what it will sign client assertions with):
registered from a JWK, listed by id, removed; only the public half of an EdDSA, ES256
or RS256 (2048+ bits) key with a `kid` is taken, and every refusal writes nothing."""

from __future__ import annotations

import json
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyhold.identity.v1 import api_resource_service_pb2 as pb
from keyhold.identity.v1 import api_resource_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


def _ec(kid: str = "ec-1") -> dict[str, Any]:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public)), "kid": kid, "alg": "ES256"}


def _ed(kid: str = "ed-1") -> dict[str, Any]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public)), "kid": kid, "alg": "EdDSA"}


def _rsa(bits: int, kid: str = "rsa-1") -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "kid": kid, "alg": "RS256"}


class Keys:
    def __init__(self, stub: pb_grpc.ApiResourceServiceStub, token: str, account: str) -> None:
        self.stub, self.metadata, self.account = stub, bearer(token), account

    async def add(self, jwk: Any) -> pb.ServiceAccountKey:
        text = jwk if isinstance(jwk, str) else json.dumps(jwk)
        added = await self.stub.AddServiceAccountKey(
            pb.AddServiceAccountKeyRequest(parent=self.account, public_jwk=text),
            metadata=self.metadata,
        )
        return added.key

    async def names(self) -> list[str]:
        listed = await self.stub.ListServiceAccountKeys(
            pb.ListServiceAccountKeysRequest(parent=self.account), metadata=self.metadata
        )
        return [key.name for key in listed.keys]


@pytest.fixture
async def keys(server: Server) -> Keys:
    app, channel = server
    token, _ = await signed_in(app, "root@example.com", ("admin", "user"))
    account, _ = await app.identity.service_accounts.create("signer", [])
    return Keys(pb_grpc.ApiResourceServiceStub(channel), token, account.name)


async def test_public_keys_are_added_listed_and_deleted(keys: Keys) -> None:
    added = await keys.add(_ec())
    assert (added.name, added.key_id, added.algorithm) == (
        f"{keys.account}/keys/ec-1",
        "ec-1",
        "ES256",
    )
    assert json.loads(added.public_jwk)["crv"] == "P-256"
    await keys.add(_ed())
    await keys.add(_rsa(2048))
    assert await keys.names() == [f"{keys.account}/keys/{k}" for k in ("ec-1", "ed-1", "rsa-1")]
    paged = await keys.stub.ListServiceAccountKeys(
        pb.ListServiceAccountKeysRequest(parent=keys.account, page_size=2), metadata=keys.metadata
    )
    assert len(paged.keys) == 2
    assert paged.next_page_token

    await keys.stub.DeleteServiceAccountKey(
        pb.DeleteServiceAccountKeyRequest(name=f"{keys.account}/keys/ed-1"), metadata=keys.metadata
    )
    assert await keys.names() == [f"{keys.account}/keys/{k}" for k in ("ec-1", "rsa-1")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keys.stub.DeleteServiceAccountKey(
            pb.DeleteServiceAccountKeyRequest(name=f"{keys.account}/keys/ed-1"),
            metadata=keys.metadata,
        )
    assert rich_error(caught.value).reason == "KEY_NOT_FOUND"


def _private_ec() -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)), "kid": "p", "alg": "ES256"}


@pytest.mark.parametrize(
    "jwk",
    [
        "not json",
        "[1, 2]",
        _private_ec(),
        _rsa(1024),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"},
        {k: v for k, v in _ec().items() if k != "kid"},
        {**_ec(), "kid": "has space"},
        {**_ec(), "alg": "ES384"},
        {**_ec(), "alg": "RS256"},
        {**_ec(), "x": "AAAA"},
    ],
    ids=lambda jwk: str(jwk)[:24],
)
async def test_anything_but_a_usable_public_key_is_refused(keys: Keys, jwk: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keys.add(jwk)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "KEY_INVALID")
    assert await keys.names() == []


async def test_a_taken_key_id_and_an_unknown_account_are_refused(keys: Keys) -> None:
    await keys.add(_ec("same"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keys.add(_ed("same"))
    assert rich_error(caught.value).reason == "KEY_EXISTS"
    missing = Keys(keys.stub, "", "service-accounts/nobody")
    missing.metadata = keys.metadata
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await missing.add(_ec())
    assert rich_error(caught.value).reason == "SERVICE_ACCOUNT_NOT_FOUND"
    assert await keys.names() == [f"{keys.account}/keys/same"]
