"""One string per token: a token Keyhold issued, re-encoded into another string that
still verifies (ECDSA's high-S twin, padding, other unused bits), authenticates no one
and introspects as inactive, while the original keeps working."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.jose_canonical import P256_ORDER
from keyhold.server import KeyholdServer
from tests.support.jws import altered_trailing_bits, high_s_twin, signature_s, with_signature
from tests.support.servers import bearer, service_token, signed_in
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]

VARIANTS: dict[str, Callable[[str], str]] = {
    "high-s": high_s_twin,
    "padded": lambda token: token + "==",
    "trailing-bits": lambda token: with_signature(
        token, altered_trailing_bits(token.rpartition(".")[2])
    ),
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
async def test_another_string_for_a_token_authenticates_no_one(
    server: Server, variant: Callable[[str], str]
) -> None:
    app, channel = server
    identity = pb_grpc.IdentityServiceStub(channel)
    token, name = await signed_in(app)
    assert signature_s(token) <= P256_ORDER // 2
    other = variant(token)
    assert other != token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(other))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_CANONICAL")
    assert (await identity.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))).subject == name
    introspector = bearer(await service_token(app, ("identity.introspect",)))
    answers = [
        await identity.IntrospectToken(pb.IntrospectTokenRequest(token=t), metadata=introspector)
        for t in (token, other)
    ]
    assert [answer.active for answer in answers] == [True, False]
