"""`authorization` metadata that no token can be: sent twice (which one counts would
depend on who reads it: the last one won), or longer than 8 KiB. Both are refused
UNAUTHENTICATED on every method, public ones included."""

from __future__ import annotations

import grpc
import pytest

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
LIMIT = 8 * 1024


async def refusal(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich_error(caught.value)


async def test_two_authorization_entries_are_ambiguous(server: Server) -> None:
    app, channel = server
    admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
    user, _ = await signed_in(app, "user@example.com")
    stub = pb_grpc.IdentityServiceStub(channel)
    for first, second in ((user, admin), (admin, admin)):
        metadata = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}"))
        for call in (
            stub.WhoAmI(pb.WhoAmIRequest(), metadata=metadata),
            stub.ListUsers(pb.ListUsersRequest(), metadata=metadata),
            stub.GetJwks(pb.GetJwksRequest(), metadata=metadata),  # public
        ):
            error = await refusal(call)
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "CREDENTIALS_AMBIGUOUS",
            )
            assert error.error_info is not None
            assert error.error_info.domain == "keyhold.identity"


async def test_other_repeated_metadata_leaves_one_authorization_alone(server: Server) -> None:
    app, channel = server
    user, user_name = await signed_in(app, "user@example.com")
    metadata = (("x-tag", "a"), ("authorization", f"Bearer {user}"), ("x-tag", "b"))
    response = await pb_grpc.IdentityServiceStub(channel).WhoAmI(
        pb.WhoAmIRequest(), metadata=metadata
    )
    assert response.subject == user_name


@pytest.mark.parametrize(
    "header",
    ["Bearer " + "a" * LIMIT, "Basic " + "a" * LIMIT, "Bearer " + " " * LIMIT + "token"],
    ids=["bearer", "another-scheme", "padded"],
)
async def test_authorization_over_8_kib_is_refused_on_every_method(
    server: Server, header: str
) -> None:
    _, channel = server
    stub = pb_grpc.IdentityServiceStub(channel)
    metadata = (("authorization", header),)
    for call in (
        stub.WhoAmI(pb.WhoAmIRequest(), metadata=metadata),
        stub.GetJwks(pb.GetJwksRequest(), metadata=metadata),  # public: not ignored
        stub.CreateSession(
            pb.CreateSessionRequest(email="a@example.com", password="p" * 12), metadata=metadata
        ),
    ):
        error = await refusal(call)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_TOO_LARGE")


async def test_authorization_of_exactly_8_kib_reaches_the_token_check(server: Server) -> None:
    _, channel = server
    header = "Bearer " + "a" * (LIMIT - len("Bearer "))
    stub = pb_grpc.IdentityServiceStub(channel)
    error = await refusal(stub.WhoAmI(pb.WhoAmIRequest(), metadata=(("authorization", header),)))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED")
    # On a public method an unusable token of allowed size is ignored, as before.
    await stub.GetJwks(pb.GetJwksRequest(), metadata=(("authorization", header),))
