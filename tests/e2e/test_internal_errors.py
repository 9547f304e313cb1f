"""A bug, in a handler or in the policy pipeline in front of it, leaves as INTERNAL with a
rich status that quotes the request id and shows no internals; the server carries on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from keyhold.api.pipeline.rate_limit import RateLimitGate
from keyhold.api.servicers.identity import IdentityServicer
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.servers import running_server, settings_for
from tests.support.status import rich_error

SECRET_DETAIL = "internal detail 5f1c"


async def _internal(channel: grpc.aio.Channel) -> None:
    identity = pb_grpc.IdentityServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetJwks(pb.GetJwksRequest(), metadata=(("x-request-id", "req-42"),))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "req-42" in error.message
    assert SECRET_DETAIL not in error.message
    assert error.trailing["x-request-id"] == "req-42"


async def test_a_bug_in_a_handler_is_internal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: IdentityServicer, request: Any, context: Any) -> Any:
        raise RuntimeError(SECRET_DETAIL)

    monkeypatch.setattr(IdentityServicer, "GetJwks", broken)
    async with running_server(settings_for(tmp_path)) as (_, channel):
        await _internal(channel)


async def test_a_bug_in_the_pipeline_is_internal_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(settings_for(tmp_path)) as (_, channel):

        async def broken(self: RateLimitGate, *args: Any) -> None:
            raise RuntimeError(SECRET_DETAIL)

        monkeypatch.setattr(RateLimitGate, "check", broken)
        await _internal(channel)
        monkeypatch.undo()
        assert (await pb_grpc.IdentityServiceStub(channel).GetJwks(pb.GetJwksRequest())).keys
