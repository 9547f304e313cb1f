"""Admins trust external issuers and map their subjects to service accounts: every
change is audited, bad input is refused with its reason and changes nothing, and a JWKS
URL must pass the egress policy when it is registered."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from keyhold.domain.audit.events import AuditFilter
from keyhold.identity.v1 import api_resource_service_pb2 as pb
from keyhold.identity.v1 import api_resource_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
K8S = "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123"


def _jwks(*kids: str) -> str:
    keys = []
    for kid in kids:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        keys.append({**json.loads(ECAlgorithm.to_jwk(public)), "kid": kid})
    return json.dumps({"keys": keys})


JWKS = _jwks("a")


async def _admin(app: KeyholdServer) -> tuple[tuple[str, str], ...]:
    return bearer((await signed_in(app, "admin@example.com", ("admin", "user")))[0])


async def _refused(call: Any, request: Any, admin: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=admin)
    error = rich_error(caught.value)
    violations = error.bad_request.field_violations if error.bad_request else []
    fields = ",".join(v.field for v in violations)
    return f"{error.code.name} {error.reason} {fields}".strip()


def _create(issuer_id: str, **fields: Any) -> pb.CreateTrustedIssuerRequest:
    values: dict[str, Any] = {"issuer": K8S, "jwks_json": JWKS, "audience": "keyhold", **fields}
    return pb.CreateTrustedIssuerRequest(
        trusted_issuer_id=issuer_id, trusted_issuer=pb.TrustedIssuer(**values)
    )


async def test_an_issuer_is_trusted_mapped_listed_and_withdrawn(server: Server) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    account, _ = await app.identity.service_accounts.create("payments", [])
    created = (await stub.CreateTrustedIssuer(_create("eks-prod"), metadata=admin)).trusted_issuer
    assert (created.name, created.issuer, created.audience) == (
        "trusted-issuers/eks-prod",
        K8S,
        "keyhold",
    )
    assert created.create_time.seconds > 0
    for pattern in ("system:serviceaccount:payments:*", "system:serviceaccount:payments:api"):
        mapped = await stub.MapWorkloadIdentity(
            pb.MapWorkloadIdentityRequest(
                trusted_issuer=created.name,
                mapping=pb.WorkloadIdentityMapping(
                    subject_pattern=pattern, service_account=account.name
                ),
            ),
            metadata=admin,
        )
    assert [m.subject_pattern for m in mapped.trusted_issuer.mappings] == [
        "system:serviceaccount:payments:*",
        "system:serviceaccount:payments:api",
    ]
    listed = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(), metadata=admin)
    assert [(i.name, len(i.mappings)) for i in listed.trusted_issuers] == [(created.name, 2)]

    unmapped = await stub.UnmapWorkloadIdentity(
        pb.UnmapWorkloadIdentityRequest(
            trusted_issuer=created.name, subject_pattern="system:serviceaccount:payments:*"
        ),
        metadata=admin,
    )
    assert [m.subject_pattern for m in unmapped.trusted_issuer.mappings] == [
        "system:serviceaccount:payments:api"
    ]
    await stub.DeleteTrustedIssuer(pb.DeleteTrustedIssuerRequest(name=created.name), metadata=admin)
    listed = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(), metadata=admin)
    assert list(listed.trusted_issuers) == []

    actions = [
        event.record.action
        for event in await app.audit.trail.newest_first(AuditFilter(), None, 50)
        if event.record.resource_name == created.name and event.record.outcome.value == "succeeded"
    ]
    assert sorted(set(actions)) == [
        "identity.trusted_issuer.create",
        "identity.trusted_issuer.delete",
        "identity.workload_identity.map",
        "identity.workload_identity.unmap",
    ]


async def test_issuers_are_listed_by_pages(server: Server) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    for n in range(3):
        await stub.CreateTrustedIssuer(
            _create(f"cluster-{n}", issuer=f"https://cluster-{n}.example"), metadata=admin
        )
    first = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(page_size=2), metadata=admin)
    second = await stub.ListTrustedIssuers(
        pb.ListTrustedIssuersRequest(page_size=2, page_token=first.next_page_token),
        metadata=admin,
    )
    names = [i.name for i in [*first.trusted_issuers, *second.trusted_issuers]]
    assert names == [f"trusted-issuers/cluster-{n}" for n in range(3)]
    assert not second.next_page_token


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (_create("Bad_Id"), "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer_id"),
        (
            _create("x", issuer="http://cluster.example"),
            "INVALID_ARGUMENT WORKLOAD_IDENTITY_INVALID trusted_issuer.issuer",
        ),
        (
            _create("x", audience=""),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.audience",
        ),
        (
            _create("x", jwks_json=""),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.jwks_url",
        ),
        (
            _create("x", jwks_url="https://cluster.example/jwks"),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.jwks_url",
        ),
        (
            _create("x", jwks_json='{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}'),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.jwks_json",
        ),
        (
            _create("x", jwks_json="[]"),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.jwks_json",
        ),
        (
            _create(
                "x",
                jwks_json=json.dumps(
                    {
                        "keys": [
                            {
                                **json.loads(
                                    RSAAlgorithm.to_jwk(
                                        rsa.generate_private_key(
                                            public_exponent=65537,
                                            key_size=1024,  # noqa: S505 - refused, the point
                                        ).public_key()
                                    )
                                ),
                                "kid": "short",
                            }
                        ]
                    }
                ),
            ),
            "INVALID_ARGUMENT TRUSTED_ISSUER_INVALID trusted_issuer.jwks_json",
        ),
        (
            _create("x", jwks_json="", jwks_url="https://169.254.169.254/jwks"),
            "INVALID_ARGUMENT URL_NOT_ALLOWED trusted_issuer.jwks_url",
        ),
        (
            _create("x", jwks_json="", jwks_url="https://cluster.example:6443/openid/v1/jwks"),
            "INVALID_ARGUMENT URL_NOT_ALLOWED trusted_issuer.jwks_url",
        ),
    ],
)
async def test_an_issuer_that_is_not_valid_is_refused_and_nothing_is_stored(
    server: Server, request_: pb.CreateTrustedIssuerRequest, refusal: str
) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    assert await _refused(stub.CreateTrustedIssuer, request_, admin) == refusal
    listed = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(), metadata=admin)
    assert list(listed.trusted_issuers) == []


async def test_an_issuer_is_trusted_once(server: Server) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    await stub.CreateTrustedIssuer(_create("one"), metadata=admin)
    assert await _refused(stub.CreateTrustedIssuer, _create("one", issuer=K8S + "x"), admin) == (
        "ALREADY_EXISTS TRUSTED_ISSUER_EXISTS"
    )
    assert await _refused(stub.CreateTrustedIssuer, _create("two"), admin) == (
        "ALREADY_EXISTS TRUSTED_ISSUER_EXISTS"
    )


async def test_mappings_name_what_exists(server: Server) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    account, _ = await app.identity.service_accounts.create("payments", [])
    await stub.CreateTrustedIssuer(_create("eks"), metadata=admin)

    def mapping(issuer: str, pattern: str, account_name: str) -> pb.MapWorkloadIdentityRequest:
        return pb.MapWorkloadIdentityRequest(
            trusted_issuer=issuer,
            mapping=pb.WorkloadIdentityMapping(
                subject_pattern=pattern, service_account=account_name
            ),
        )

    cases = [
        (
            mapping("trusted-issuers/none", "a", account.name),
            "NOT_FOUND TRUSTED_ISSUER_NOT_FOUND",
        ),
        (
            mapping("trusted-issuers/eks", "a", "service-accounts/" + "0" * 32),
            "NOT_FOUND SERVICE_ACCOUNT_NOT_FOUND",
        ),
        (
            mapping("trusted-issuers/eks", "*", account.name),
            "INVALID_ARGUMENT WORKLOAD_IDENTITY_INVALID mapping.subject_pattern",
        ),
        (
            mapping("issuers/eks", "a", account.name),
            "INVALID_ARGUMENT RESOURCE_NAME_INVALID trusted_issuer",
        ),
    ]
    for request, refusal in cases:
        assert await _refused(stub.MapWorkloadIdentity, request, admin) == refusal
    assert await _refused(
        stub.UnmapWorkloadIdentity,
        pb.UnmapWorkloadIdentityRequest(trusted_issuer="trusted-issuers/eks", subject_pattern="a"),
        admin,
    ) == ("NOT_FOUND WORKLOAD_IDENTITY_NOT_FOUND")
    assert await _refused(
        stub.DeleteTrustedIssuer, pb.DeleteTrustedIssuerRequest(name="trusted-issuers/none"), admin
    ) == ("NOT_FOUND TRUSTED_ISSUER_NOT_FOUND")
    listed = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(), metadata=admin)
    assert [len(i.mappings) for i in listed.trusted_issuers] == [0]


async def test_deleting_an_account_removes_its_mappings(server: Server) -> None:
    app, channel = server
    admin = await _admin(app)
    stub = pb_grpc.ApiResourceServiceStub(channel)
    account, _ = await app.identity.service_accounts.create("payments", [])
    await stub.CreateTrustedIssuer(_create("eks"), metadata=admin)
    await app.identity.trusted_issuers.map("trusted-issuers/eks", "spiffe://a/b", account.name)
    await app.identity.service_accounts.delete(account.name)
    listed = await stub.ListTrustedIssuers(pb.ListTrustedIssuersRequest(), metadata=admin)
    assert [len(i.mappings) for i in listed.trusted_issuers] == [0]
