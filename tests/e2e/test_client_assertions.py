"""A service account authenticates without a shared secret: a client assertion (RFC 7523
`private_key_jwt`) signed by a key registered on it, naming Keyhold's issuer, short-lived
and never presented twice. Each refusal has its own reason and is audited."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.field_mask_pb2 import FieldMask

from keyhold.domain.audit.events import AuditFilter
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


class Signer:
    def __init__(self, client_id: str, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        self.client_id, self.key, self.kid = client_id, key, kid

    def assertion(self, **changes: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": "keyhold",
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            **changes,
        }
        return jwt.encode(claims, self.key, "ES256", {"kid": self.kid})


@pytest.fixture
async def signer(server: Server) -> Signer:
    app, _ = server
    account, _ = await app.identity.service_accounts.create("keyless", ["audit.read"])
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    await app.identity.account_keys.add(
        account.name, json.dumps({**jwk, "kid": "k1", "alg": "ES256"})
    )
    return Signer(account.client_id, key, "k1")


async def _token(channel: grpc.aio.Channel, client_id: str, **fields: Any) -> Any:
    return await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(
        pb.CreateServiceTokenRequest(client_id=client_id, **fields)
    )


async def _refused(channel: grpc.aio.Channel, client_id: str, **fields: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _token(channel, client_id, **fields)
    error = rich_error(caught.value)
    return f"{error.code.name} {error.reason}"


async def test_a_signed_assertion_stands_in_for_the_secret(server: Server, signer: Signer) -> None:
    _, channel = server
    issued = await _token(channel, signer.client_id, client_assertion=signer.assertion())
    assert list(issued.scopes) == ["audit.read"]
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert claims["sub"].startswith("service-accounts/")


async def test_an_assertion_is_accepted_once(server: Server, signer: Signer) -> None:
    _, channel = server
    assertion = signer.assertion()
    await _token(channel, signer.client_id, client_assertion=assertion)
    assert await _refused(channel, signer.client_id, client_assertion=assertion) == (
        "UNAUTHENTICATED ASSERTION_REPLAYED"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "someone-else"}, "ASSERTION_AUDIENCE"),
        ({"exp": int(time.time()) + 3600}, "ASSERTION_TOO_LONG_LIVED"),
        ({"iat": int(time.time()) - 400, "exp": int(time.time()) - 200}, "ASSERTION_EXPIRED"),
        ({"iss": "khc_other"}, "ASSERTION_INVALID"),
        ({"jti": ""}, "ASSERTION_INVALID"),
    ],
)
async def test_what_an_assertion_says_is_checked(
    server: Server, signer: Signer, changes: dict[str, Any], reason: str
) -> None:
    _, channel = server
    refused = await _refused(
        channel, signer.client_id, client_assertion=signer.assertion(**changes)
    )
    assert refused == f"UNAUTHENTICATED {reason}"


async def test_only_the_registered_key_signs(server: Server, signer: Signer) -> None:
    _, channel = server
    stranger = Signer(signer.client_id, ec.generate_private_key(ec.SECP256R1()), "k1")
    unknown = Signer(signer.client_id, signer.key, "k2")
    assert await _refused(channel, signer.client_id, client_assertion=stranger.assertion()) == (
        "UNAUTHENTICATED ASSERTION_INVALID"
    )
    assert await _refused(channel, signer.client_id, client_assertion=unknown.assertion()) == (
        "UNAUTHENTICATED KEY_UNKNOWN"
    )
    for junk in ("not.a.jwt", "W1tbW1tb.e30.AA", jwt.utils.base64url_encode(b"[" * 9000).decode()):
        assert await _refused(channel, signer.client_id, client_assertion=junk + ".e30.AA") == (
            "UNAUTHENTICATED ASSERTION_INVALID"
        )
    assert await _refused(
        channel, "khc_nobody", client_assertion=signer.assertion(iss="khc_nobody", sub="khc_nobody")
    ) == ("UNAUTHENTICATED INVALID_CLIENT")
    assert await _refused(
        channel, signer.client_id, client_secret="khs_x", client_assertion=signer.assertion()
    ) == ("INVALID_ARGUMENT CLIENT_CREDENTIALS_AMBIGUOUS")


async def test_refusals_are_audited_with_their_reason(server: Server, signer: Signer) -> None:
    app, channel = server
    await _refused(channel, signer.client_id, client_assertion=signer.assertion(aud="x"))
    events = await app.audit.trail.newest_first(
        AuditFilter(action="identity.service_token.create"), None, 10
    )
    outcome = next(e for e in events if e.record.outcome.value != "attempted")
    assert (outcome.record.reason, outcome.record.details.get("credential")) == (
        "ASSERTION_AUDIENCE",
        "client_assertion",
    )


async def test_an_account_that_refuses_secrets_takes_assertions_only(
    server: Server, signer: Signer
) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "root@example.com", ("admin", "user"))
    account = await app.identity.service_accounts.create("both", [])
    name, client_id, secret = account[0].name, account[0].client_id, account[1]
    identity = pb_grpc.IdentityServiceStub(channel)
    updated = await identity.UpdateServiceAccount(
        pb.UpdateServiceAccountRequest(
            service_account=pb.ServiceAccount(name=name, refuses_secrets=True),
            update_mask=FieldMask(paths=["refuses_secrets"]),
        ),
        metadata=bearer(admin),
    )
    assert updated.service_account.refuses_secrets
    assert updated.service_account.display_name == "both"
    assert await _refused(channel, client_id, client_secret=secret) == (
        "UNAUTHENTICATED SECRETS_REFUSED"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.UpdateServiceAccount(
            pb.UpdateServiceAccountRequest(
                service_account=pb.ServiceAccount(name=name, client_id="khc_mine"),
                update_mask=FieldMask(paths=["client_id"]),
            ),
            metadata=bearer(admin),
        )
    assert rich_error(caught.value).reason == "UPDATE_MASK_INVALID"
    # The signer's account still takes its assertions.
    assert await _token(channel, signer.client_id, client_assertion=signer.assertion())


async def test_a_removed_key_signs_nothing_more_on_either_engine(
    any_server: Server,
) -> None:
    app, channel = any_server
    account, _ = await app.identity.service_accounts.create("keyless", ["audit.read"])
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    added = await app.identity.account_keys.add(
        account.name, json.dumps({**jwk, "kid": "k1", "alg": "ES256"})
    )
    signer = Signer(account.client_id, key, "k1")
    first = signer.assertion()
    assert await _token(channel, signer.client_id, client_assertion=first)
    assert await _refused(channel, signer.client_id, client_assertion=first) == (
        "UNAUTHENTICATED ASSERTION_REPLAYED"
    )
    assert await _token(channel, signer.client_id, client_assertion=signer.assertion())
    await app.identity.account_keys.delete(added.name)
    # The key was in use a moment ago; removing it takes effect with the next assertion.
    assert await _refused(channel, signer.client_id, client_assertion=signer.assertion()) == (
        "UNAUTHENTICATED KEY_UNKNOWN"
    )
    # Registered again under the same kid, a new key signs; the old one does not.
    other = ec.generate_private_key(ec.SECP256R1())
    other_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key()))
    await app.identity.account_keys.add(
        account.name, json.dumps({**other_jwk, "kid": "k1", "alg": "ES256"})
    )
    assert await _refused(channel, signer.client_id, client_assertion=signer.assertion()) == (
        "UNAUTHENTICATED ASSERTION_INVALID"
    )
    renewed = Signer(account.client_id, other, "k1")
    assert await _token(channel, signer.client_id, client_assertion=renewed.assertion())
    # Replaced between two assertions: the next one, by the new key, is accepted.
    keys = await app.identity.account_keys.page(account.name, 10, "")
    await app.identity.account_keys.delete(keys[0][0].name)
    third = ec.generate_private_key(ec.SECP256R1())
    third_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(third.public_key()))
    await app.identity.account_keys.add(
        account.name, json.dumps({**third_jwk, "kid": "k1", "alg": "ES256"})
    )
    latest = Signer(account.client_id, third, "k1")
    assert await _token(channel, signer.client_id, client_assertion=latest.assertion())
