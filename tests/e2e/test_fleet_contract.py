"""The fleet authorization contract (API resources, token exchange, keyless workload
identity) is published before all of it is built: what is not built answers UNIMPLEMENTED
(reason NOT_IMPLEMENTED) once the caller passed the pipeline, and CreateServiceToken
refuses the credentials it does not honour yet rather than ignore them."""

from __future__ import annotations

import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.rpcs import keyhold_rpcs
from tests.support.servers import bearer, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]

NOT_BUILT = {
    *(
        f"ApiResourceService.{name}"
        for name in (
            "CreateTrustedIssuer",
            "ListTrustedIssuers",
            "DeleteTrustedIssuer",
            "MapWorkloadIdentity",
            "UnmapWorkloadIdentity",
        )
    ),
}


async def test_each_rpc_not_built_answers_unimplemented_to_an_admin(server: Server) -> None:
    app, channel = server
    token, _ = await signed_in(app, "admin@example.com", ("admin",))
    rpcs = [rpc for rpc in keyhold_rpcs() if rpc.name in NOT_BUILT]
    assert {rpc.name for rpc in rpcs} == NOT_BUILT
    for rpc in rpcs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.typed(channel)(rpc.request_class()(), metadata=bearer(token))
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED, rpc.name
        assert rich_error(caught.value).reason == "NOT_IMPLEMENTED", rpc.name


@pytest.mark.parametrize(
    "field",
    [{"subject_token": "a.b.c"}],
)
async def test_service_tokens_refuse_what_they_do_not_honour_yet(
    server: Server, field: dict[str, str]
) -> None:
    _, channel = server
    request = pb.CreateServiceTokenRequest(client_id="kh_any", client_secret="any", **field)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).CreateServiceToken(request)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
