"""Keyless workload identity: a token from a trusted issuer (here a loopback stand-in for
a Kubernetes cluster, publishing a real JWKS over TLS with its own CA) stands in for a
service account's secret when its subject is mapped to the account. The JWKS URL is
reached only through the egress policy (strict here, with the issuer's host:port
allowed) and verified against the configured CA. Each refusal has its own reason and is
audited."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from keyhold.domain.audit.events import AuditFilter
from keyhold.identity.v1 import api_resource_service_pb2 as rpb
from keyhold.identity.v1 import api_resource_service_pb2_grpc as rpb_grpc
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error
from tests.support.workload_issuer import AUDIENCE, ISSUER, WorkloadIssuer

REPORTS_API = "system:serviceaccount:reports:api"


@dataclass
class Cluster:
    app: KeyholdServer
    channel: grpc.aio.Channel
    issuer: WorkloadIssuer
    admin: tuple[tuple[str, str], ...]
    account: str  # service-accounts/{id} that reports' workloads act as
    client_id: str

    @property
    def resources(self) -> Any:
        return rpb_grpc.ApiResourceServiceStub(self.channel)

    async def token(self, subject_token: str, **fields: Any) -> Any:
        return await pb_grpc.IdentityServiceStub(self.channel).CreateServiceToken(
            pb.CreateServiceTokenRequest(subject_token=subject_token, **fields)
        )

    async def refused(self, subject_token: str, **fields: Any) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.token(subject_token, **fields)
        error = rich_error(caught.value)
        return f"{error.code.name} {error.reason}"


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[WorkloadIssuer]:
    with WorkloadIssuer(tmp_path) as running:
        yield running


def _strict(tmp_path: Path, issuer: WorkloadIssuer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "egress_allow_loopback_http": False,
        "egress_allow": f"127.0.0.1:{issuer.port}",
        "egress_ca_file": issuer.ca_file,
        **overrides,
    }
    return settings_for(tmp_path, **values)


async def _cluster(
    app: KeyholdServer, channel: grpc.aio.Channel, issuer: WorkloadIssuer
) -> Cluster:
    admin = bearer((await signed_in(app, "admin@example.com", ("admin", "user")))[0])
    account, _ = await app.identity.service_accounts.create("reports", ["identity.introspect"])
    cluster = Cluster(app, channel, issuer, admin, account.name, account.client_id)
    await cluster.resources.CreateTrustedIssuer(
        rpb.CreateTrustedIssuerRequest(
            trusted_issuer_id="prod-cluster",
            trusted_issuer=rpb.TrustedIssuer(
                issuer=ISSUER, jwks_url=issuer.jwks_url, audience=AUDIENCE
            ),
        ),
        metadata=admin,
    )
    await cluster.resources.MapWorkloadIdentity(
        rpb.MapWorkloadIdentityRequest(
            trusted_issuer="trusted-issuers/prod-cluster",
            mapping=rpb.WorkloadIdentityMapping(
                subject_pattern="system:serviceaccount:reports:*", service_account=account.name
            ),
        ),
        metadata=admin,
    )
    return cluster


@pytest.fixture
async def cluster(tmp_path: Path, issuer: WorkloadIssuer) -> AsyncIterator[Cluster]:
    async with running_server(_strict(tmp_path, issuer)) as (app, channel):
        yield await _cluster(app, channel, issuer)


async def test_a_mapped_workload_token_stands_in_for_the_secret(cluster: Cluster) -> None:
    token = cluster.issuer.token(REPORTS_API)
    first = await cluster.token(token)
    claims = jwt.decode(first.access_token, options={"verify_signature": False})
    assert (claims["sub"], list(first.scopes)) == (cluster.account, ["identity.introspect"])
    # A workload presents the same token at each renewal until it expires.
    again = await cluster.token(token, client_id=cluster.client_id)
    assert again.access_token
    assert cluster.issuer.fetches == 1  # the JWKS, once, then kept


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": ["https://kubernetes.default.svc"]}, "ASSERTION_AUDIENCE"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 600}, "ASSERTION_EXPIRED"),
        ({"nbf": int(time.time()) + 600}, "ASSERTION_EXPIRED"),
        ({"exp": int(time.time()) + 2 * 86_400}, "ASSERTION_TOO_LONG_LIVED"),
        ({"iss": "https://other-cluster.example"}, "ISSUER_UNTRUSTED"),
        ({"sub": "system:serviceaccount:billing:api"}, "WORKLOAD_UNMAPPED"),
        ({"exp": "tomorrow"}, "ASSERTION_INVALID"),
    ],
)
async def test_what_a_workload_token_says_is_checked(
    cluster: Cluster, claims: dict[str, Any], reason: str
) -> None:
    token = cluster.issuer.token(REPORTS_API, **claims)
    assert await cluster.refused(token) == f"UNAUTHENTICATED {reason}"


async def test_only_the_issuers_keys_sign(cluster: Cluster) -> None:
    issuer = cluster.issuer
    genuine = issuer.token(REPORTS_API)
    header, payload, _ = genuine.split(".")
    forged = issuer.token(REPORTS_API, sub="system:serviceaccount:reports:admin").split(".")
    spliced = f"{header}.{forged[1]}.{genuine.split('.')[2]}"
    assert await cluster.refused(spliced) == "UNAUTHENTICATED ASSERTION_INVALID"
    unsigned = jwt.encode(json.loads(jwt.utils.base64url_decode(payload)), None, "none")
    assert await cluster.refused(unsigned) == "UNAUTHENTICATED KEY_UNKNOWN"
    hmac_signed = jwt.encode(
        jwt.decode(genuine, options={"verify_signature": False}),
        "k" * 32,
        "HS256",
        {"kid": issuer.published[-1]},
    )
    assert await cluster.refused(hmac_signed) == "UNAUTHENTICATED ASSERTION_INVALID"
    assert await cluster.refused("not.a.jwt") == "UNAUTHENTICATED ASSERTION_INVALID"


async def test_a_token_must_name_the_account_it_is_mapped_to(cluster: Cluster) -> None:
    other, secret = await cluster.app.identity.service_accounts.create("other", [])
    token = cluster.issuer.token(REPORTS_API)
    assert await cluster.refused(token, client_id=other.client_id) == (
        "UNAUTHENTICATED INVALID_CLIENT"
    )
    assert await cluster.refused(token, client_id=other.client_id, client_secret=secret) == (
        "INVALID_ARGUMENT CLIENT_CREDENTIALS_AMBIGUOUS"
    )


async def test_unknown_key_ids_do_not_make_the_jwks_be_fetched_again_and_again(
    cluster: Cluster,
) -> None:
    # The fetch again on a key first seen, once its interval has passed, is in
    # tests/unit/test_issuer_keys.py with a clock of the test's own.
    issuer = cluster.issuer
    await cluster.token(issuer.token(REPORTS_API))
    genuine = issuer.token(REPORTS_API)
    for made_up in ("k9", "k10", "k11"):
        header = jwt.utils.base64url_encode(
            json.dumps({"alg": "RS256", "kid": made_up}).encode()
        ).decode()
        assert await cluster.refused(header + genuine[genuine.index(".") :]) == (
            "UNAUTHENTICATED KEY_UNKNOWN"
        )
    assert issuer.fetches == 1


async def test_an_issuer_outage_does_not_lock_out_known_keys(
    tmp_path: Path, issuer: WorkloadIssuer
) -> None:
    async with running_server(_strict(tmp_path, issuer)) as (app, channel):
        cluster = await _cluster(app, channel, issuer)
        await cluster.token(issuer.token(REPORTS_API))
        issuer.down = True
        issuer.rotate()  # a key Keyhold cannot learn while the issuer is down
        assert await cluster.token(issuer.token(REPORTS_API, kid="k1"))
        assert await cluster.refused(issuer.token(REPORTS_API)) == "UNAUTHENTICATED KEY_UNKNOWN"


async def test_keys_that_cannot_be_fetched_make_the_call_unavailable(
    tmp_path: Path, issuer: WorkloadIssuer
) -> None:
    issuer.down = True
    async with running_server(_strict(tmp_path, issuer)) as (app, channel):
        cluster = await _cluster(app, channel, issuer)
        assert await cluster.refused(issuer.token(REPORTS_API)) == (
            "UNAVAILABLE ISSUER_KEYS_UNAVAILABLE"
        )


async def test_the_issuers_certificate_is_verified(tmp_path: Path, issuer: WorkloadIssuer) -> None:
    # Without the cluster's CA, the public roots do not vouch for the issuer.
    async with running_server(_strict(tmp_path, issuer, egress_ca_file=None)) as (app, channel):
        cluster = await _cluster(app, channel, issuer)
        assert await cluster.refused(issuer.token(REPORTS_API)) == (
            "UNAVAILABLE ISSUER_KEYS_UNAVAILABLE"
        )
    assert issuer.fetches == 0


async def test_an_inline_jwks_needs_no_fetch(tmp_path: Path, issuer: WorkloadIssuer) -> None:
    async with running_server(settings_for(tmp_path)) as (app, channel):
        admin = bearer((await signed_in(app, "admin@example.com", ("admin", "user")))[0])
        account, _ = await app.identity.service_accounts.create("spiffe", [])
        resources = rpb_grpc.ApiResourceServiceStub(channel)
        await resources.CreateTrustedIssuer(
            rpb.CreateTrustedIssuerRequest(
                trusted_issuer_id="spire",
                trusted_issuer=rpb.TrustedIssuer(
                    issuer=ISSUER, jwks_json=json.dumps(issuer.jwks()), audience="keyhold.internal"
                ),
            ),
            metadata=admin,
        )
        await resources.MapWorkloadIdentity(
            rpb.MapWorkloadIdentityRequest(
                trusted_issuer="trusted-issuers/spire",
                mapping=rpb.WorkloadIdentityMapping(
                    subject_pattern="spiffe://prod/billing", service_account=account.name
                ),
            ),
            metadata=admin,
        )
        token = issuer.token("spiffe://prod/billing", aud="keyhold.internal")
        issued = await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(
            pb.CreateServiceTokenRequest(subject_token=token)
        )
        claims = jwt.decode(issued.access_token, options={"verify_signature": False})
        assert claims["sub"] == account.name
    assert issuer.fetches == 0


async def test_refusals_are_audited_with_their_reason(cluster: Cluster) -> None:
    await cluster.refused(cluster.issuer.token("system:serviceaccount:billing:api"))
    events = await cluster.app.audit.trail.newest_first(
        AuditFilter(action="identity.service_token.create"), None, 10
    )
    outcome = next(e for e in events if e.record.outcome.value != "attempted")
    assert (outcome.record.reason, outcome.record.details.get("credential")) == (
        "WORKLOAD_UNMAPPED",
        "subject_token",
    )
