"""A service running in a cluster authenticates with its projected service-account token
alone: `ServiceAccountCredentials.from_token_file` against a real Keyhold that trusts a
loopback issuer (real JWKS over TLS), following the file as the kubelet rotates it."""

from __future__ import annotations

import os
from pathlib import Path

import jwt

from keyhold.application.identity.trusted_issuers import IssuerFields
from keyhold.client import ServiceAccountCredentials, keyhold_channel
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.servers import running_server, settings_for
from tests.support.workload_issuer import AUDIENCE, ISSUER, WorkloadIssuer


async def test_a_workload_authenticates_with_its_token_file(tmp_path: Path) -> None:
    with WorkloadIssuer(tmp_path) as issuer:
        settings = settings_for(
            tmp_path,
            egress_allow_loopback_http=False,
            egress_allow=f"127.0.0.1:{issuer.port}",
            egress_ca_file=issuer.ca_file,
        )
        async with running_server(settings) as (app, _):
            account, _ = await app.identity.service_accounts.create("payments", [])
            trusted = app.identity.trusted_issuers
            await trusted.create("cluster", IssuerFields(ISSUER, AUDIENCE, issuer.jwks_url))
            await trusted.map(
                "trusted-issuers/cluster", "system:serviceaccount:payments:*", account.name
            )
            token_file = tmp_path / "token"
            token_file.write_text(issuer.token("system:serviceaccount:payments:api"))
            credentials = ServiceAccountCredentials.from_token_file(token_file)
            async with keyhold_channel(f"127.0.0.1:{app.port}", credentials) as channel:
                seen = await pb_grpc.IdentityServiceStub(channel).WhoAmI(pb.WhoAmIRequest())
                assert seen.subject == account.name

                # The kubelet writes a new token (here for another pod of the account).
                token_file.write_text(issuer.token("system:serviceaccount:payments:worker"))
                os.utime(token_file, ns=(1, 1))
                credentials.invalidate()
                claims = jwt.decode(await credentials.token(), options={"verify_signature": False})
                assert claims["sub"] == account.name
            assert credentials.requests == 2
