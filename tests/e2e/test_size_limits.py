"""The configured size limits at their boundaries: a request message of exactly
`max_receive_message_bytes` reaches its handler and one byte more is refused, and so is
a header list beyond `max_metadata_bytes`.

Both refusals come from gRPC's transport, before any Keyhold code runs, so they carry
no ErrorInfo; the server keeps serving after them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import running_server, settings_for
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]
MESSAGE_LIMIT = 64 * 1024  # not gRPC's default (4 MiB) nor Keyhold's
METADATA_LIMIT = 12 * 1024  # between gRPC's default soft (8 KiB) and hard (16 KiB) limits
# HPACK counts each header as name + value + 32 bytes (RFC 7541, 4.1), and the header list
# also holds what the client adds: :path, :authority, user-agent, te, content-type...
HEADER_OVERHEAD = 32
ROOM_FOR_CLIENT_HEADERS = 1024


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    settings = settings_for(
        tmp_path,
        max_receive_message_bytes=MESSAGE_LIMIT,
        max_metadata_bytes=METADATA_LIMIT,
    )
    async with running_server(settings) as started:
        yield started


def varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(encoded) + bytes([value])


def verify_email_of_size(size: int) -> pb.VerifyEmailRequest:
    """A request serializing to exactly `size` bytes: a short token, and the rest in a
    field the message does not declare (every declared field has bounds far below the
    limit; undeclared ones are skipped by everything that reads the request)."""
    token = pb.VerifyEmailRequest(verification_token="t").SerializeToString()
    padding = size - len(token) - 1 - 3  # the field's tag, and a 3-byte length varint
    unknown = bytes([15 << 3 | 2]) + varint(padding) + b"p" * padding
    request = pb.VerifyEmailRequest.FromString(token + unknown)
    assert request.ByteSize() == size
    return request


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def assert_serving(channel: grpc.aio.Channel) -> None:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_message_of_exactly_the_limit_reaches_its_handler(limited: Server) -> None:
    _, channel = limited
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IdentityServiceStub(channel).VerifyEmail(verify_email_of_size(MESSAGE_LIMIT))
    error = rich_error(caught.value)  # the handler's answer to an unknown token
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VERIFICATION_TOKEN_INVALID",
    )


async def test_a_message_one_byte_over_the_limit_is_resource_exhausted(limited: Server) -> None:
    _, channel = limited
    stub = pb_grpc.IdentityServiceStub(channel)
    code = await code_of(stub.VerifyEmail(verify_email_of_size(MESSAGE_LIMIT + 1)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serving(channel)


def padding(total_header_bytes: int) -> tuple[tuple[str, str], ...]:
    """One header that counts `total_header_bytes` towards the header list size."""
    name = "x-padding"
    return ((name, "p" * (total_header_bytes - len(name) - HEADER_OVERHEAD)),)


async def test_metadata_just_under_the_limit_is_accepted(limited: Server) -> None:
    _, channel = limited
    stub = pb_grpc.IdentityServiceStub(channel)
    metadata = padding(METADATA_LIMIT - ROOM_FOR_CLIENT_HEADERS)
    assert await code_of(stub.GetJwks(pb.GetJwksRequest(), metadata=metadata)) is (
        grpc.StatusCode.OK
    )


async def test_metadata_over_the_limit_is_resource_exhausted(limited: Server) -> None:
    _, channel = limited
    stub = pb_grpc.IdentityServiceStub(channel)
    call = stub.GetJwks(pb.GetJwksRequest(), metadata=padding(METADATA_LIMIT + 1))
    assert await code_of(call) is grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serving(channel)
