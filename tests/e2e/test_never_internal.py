"""No request makes the server answer INTERNAL or UNKNOWN: property tests that generate
every request message of every RPC of the four services from its descriptor (extreme
integers, other scripts' digits, long text, unknown enum numbers, thousands of repeated
items, nested messages, field masks with any paths, timestamps outside 0001-9999) and
send each anonymously and as a privileged caller. Every refusal carries an ErrorInfo,
and after every call the server still answers a health check and WhoAmI.

A fixed, derandomized profile keeps the run short and the same on every machine; the
slower hunt in test_hostile_input.py also checks that refused calls write nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keyhold.adapters.persistence import tables
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from tests.e2e.test_hostile_input import Target, admits, attacked_server
from tests.support.databases import postgres_database
from tests.support.hostile import edge_requests, request_messages
from tests.support.rpcs import Rpc, keyhold_rpcs
from tests.support.status import rich_error

INTERNAL, UNKNOWN = 13, 2  # google.rpc.Code numbers, as the audit trail records them
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
RPCS = keyhold_rpcs()
SERVICES = ("keyhold.identity.v1", "keyhold.audit.v1", "keyhold.provider.v1")
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a call that hangs is no answer either
}
PROFILE = settings(
    max_examples=int(os.environ.get("NEVER_INTERNAL_EXAMPLES", "6")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _privileged(rpc: Rpc) -> str:
    """The caller whose policy lets it furthest into `rpc`: an admin user, or a service
    account holding every scope where the method is for services."""
    return "service" if rpc.auth.scopes or not admits(rpc.auth, "admin") else "admin"


@pytest_asyncio.fixture(
    loop_scope="module",
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    async with AsyncExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = await stack.enter_async_context(postgres_database())
        yield await stack.enter_async_context(attacked_server(tmp_path_factory, url))


def test_every_rpc_of_the_three_services_is_generated() -> None:
    packages = {rpc.descriptor.containing_service.file.package for rpc in RPCS}
    assert packages == set(SERVICES)
    assert any(rpc.streaming for rpc in RPCS)


async def _still_serving(target: Target) -> None:
    await target.assert_serving()
    identity = identity_grpc.IdentityServiceStub(target.channel)
    try:
        await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=target.metadata("admin"))
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return
    assert code is grpc.StatusCode.UNAUTHENTICATED, code  # the call removed the admin
    await target.revive("admin")
    await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=target.metadata("admin"))


@ON_MODULE_LOOP
@pytest.mark.parametrize("privileged", [False, True], ids=["anonymous", "privileged"])
@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
@settings(PROFILE)
@given(data=st.data())
async def test_no_request_is_answered_internal_or_unknown(
    target: Target, rpc: Rpc, privileged: bool, data: st.DataObject
) -> None:
    request = data.draw(
        request_messages(rpc.descriptor.input_type, target.seeds, target.plausible), label="request"
    )
    if request.ByteSize() > target.app.settings.max_receive_message_bytes // 2:
        request = rpc.request_class()()  # the transport refuses it before any handler
    caller = _privileged(rpc) if privileged else "anonymous"
    await _check(target, rpc, request, caller, "")


RESOURCE_FIELDS = ("name", "parent", "user", "actor", "provider", "resource")


def _names_for(target: Target, field: FieldDescriptor) -> list[str]:
    if field.type != FieldDescriptor.TYPE_STRING or field.name not in RESOURCE_FIELDS:
        return []
    return target._resource_names(field.name, field.containing_type.name)


def _plausible(target: Target, rpc: Rpc) -> Message:
    """A request naming existing resources (a nested resource too: UpdateUser's user),
    so that edge values meet the handler rather than the name check."""
    request = rpc.request_class()()
    for field in request.DESCRIPTOR.fields:
        holder, inner = request, field
        if field.message_type is not None and "name" in field.message_type.fields_by_name:
            holder, inner = getattr(request, field.name), field.message_type.fields_by_name["name"]
        names = _names_for(target, inner)
        if names and not inner.is_repeated:
            setattr(holder, inner.name, names[0])
    return request


async def _recorded_internal_errors(target: Target) -> list[str]:
    """Audited outcomes of INTERNAL or UNKNOWN: how a stream's failure shows when the
    client stopped reading before the status came."""
    events = tables.audit_events
    query = select(events.c.action, events.c.resource_name).where(
        events.c.status_code.in_((INTERNAL, UNKNOWN))
    )
    async with target.app.platform.database.engine.connect() as connection:
        return [f"{action} {name}" for action, name in await connection.execute(query)]


async def _check(target: Target, rpc: Rpc, request: Message, caller: str, label: str) -> None:
    outcome = await target.call(rpc, request, target.metadata(caller))
    if rpc.streaming:
        assert not await _recorded_internal_errors(target), f"{rpc.name} {label}"
    if outcome.error is not None:
        error = rich_error(outcome.error)
        assert error.code not in NEVER, f"{rpc.name} {label}: {error.code} {error.message!r}"
        assert error.error_info is not None, f"{rpc.name} {label}: {error.code}, no ErrorInfo"
        if error.code is grpc.StatusCode.UNAUTHENTICATED and caller != "anonymous":
            await target.revive(caller)
    await _still_serving(target)


@ON_MODULE_LOOP
@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
async def test_every_field_at_each_of_its_edges_is_answered_deliberately(
    target: Target, rpc: Rpc
) -> None:
    """Not left to chance: each field of each request (and of the resource in it) at
    each edge value, alone, the request otherwise plausible."""
    caller = "anonymous" if rpc.auth.public else _privileged(rpc)
    base = _plausible(target, rpc)

    def collections(field: FieldDescriptor) -> list[str]:
        names = _names_for(target, field)
        return sorted({name.rpartition("/")[0] + "/" for name in names})

    for label, request in edge_requests(base, collections):
        if request.ByteSize() > target.app.settings.max_receive_message_bytes // 2:
            continue
        await _check(target, rpc, request, caller, label)
