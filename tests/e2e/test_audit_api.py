"""AuditService through the generated stubs: denials recorded, reads audited, filters and
pages, verification, checkpoints verifiable with the JWKS, and live streams."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import grpc
import jwt
import pytest
from sqlalchemy import text

from keyhold.audit.v1 import audit_service_pb2 as pb
from keyhold.audit.v1 import audit_service_pb2_grpc as pb_grpc
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.server import KeyholdServer
from tests.support.databases import postgres_database
from tests.support.servers import bearer, running_server, service_token, settings_for
from tests.support.status import rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]


_AUDITORS: dict[int, tuple[tuple[str, str], ...]] = {}


async def auditor(app: KeyholdServer) -> tuple[tuple[str, str], ...]:
    """Credentials of a service account with `audit.read` (one per server)."""
    if id(app) not in _AUDITORS:
        _AUDITORS[id(app)] = bearer(await service_token(app, ("audit.read",), "auditor"))
    return _AUDITORS[id(app)]


async def auditor_subject(app: KeyholdServer) -> str:
    token = (await auditor(app))[0][1].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


async def deny(channel: grpc.aio.Channel, count: int, token: str = "") -> None:
    identity = identity_grpc.IdentityServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    for _ in range(count):
        with pytest.raises(grpc.aio.AioRpcError):
            await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=metadata)


async def test_interceptor_denials_are_recorded_without_the_token(server: Server) -> None:
    app, channel = server
    bad_token = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
    await deny(channel, 1)
    await deny(channel, 1, bad_token)
    response = await pb_grpc.AuditServiceStub(channel).ListAuditEvents(
        pb.ListAuditEventsRequest(action="access.denied"), metadata=await auditor(app)
    )
    newest, oldest = response.events
    assert oldest.outcome == newest.outcome == pb.OUTCOME_DENIED
    assert (oldest.status_code, oldest.reason) == (16, "CREDENTIALS_MISSING")
    assert (newest.status_code, newest.reason) == (16, "TOKEN_MALFORMED")
    assert oldest.actor_type == pb.ACTOR_TYPE_ANONYMOUS
    assert oldest.peer.startswith("ipv")
    assert oldest.resource_name == "/keyhold.identity.v1.IdentityService/WhoAmI"
    async with app.platform.database.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM audit_events"))).all()
    stored = " ".join(repr(tuple(row)) for row in rows)
    for fragment in bad_token.split("."):
        assert fragment not in stored


async def test_reading_the_trail_is_audited(server: Server) -> None:
    app, channel = server
    audit = pb_grpc.AuditServiceStub(channel)
    only_reads = pb.ListAuditEventsRequest(action="audit.events.list")
    await audit.ListAuditEvents(only_reads, metadata=await auditor(app))
    response = await audit.ListAuditEvents(only_reads, metadata=await auditor(app))
    outcomes = [(e.outcome, e.actor_id) for e in response.events]
    subject = await auditor_subject(app)
    # The second list sees its own ATTEMPTED record and the first list's pair.
    assert outcomes == [
        (pb.OUTCOME_ATTEMPTED, subject),
        (pb.OUTCOME_SUCCEEDED, subject),
        (pb.OUTCOME_ATTEMPTED, subject),
    ]
    assert response.events[1].details["returned"] == "1"  # it saw its own ATTEMPTED record


async def test_list_pages_newest_first_without_gaps_or_repeats(server: Server) -> None:
    app, channel = server
    await deny(channel, 7)
    audit = pb_grpc.AuditServiceStub(channel)
    seen: list[int] = []
    token = ""
    while True:
        response = await audit.ListAuditEvents(
            pb.ListAuditEventsRequest(action="access.denied", page_size=3, page_token=token),
            metadata=await auditor(app),
        )
        seen += [event.sequence for event in response.events]
        token = response.next_page_token
        if not token:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 7


async def test_filters_combine(server: Server) -> None:
    app, channel = server
    await deny(channel, 2)
    audit = pb_grpc.AuditServiceStub(channel)
    await audit.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=await auditor(app))
    response = await audit.ListAuditEvents(
        pb.ListAuditEventsRequest(actor=await auditor_subject(app), outcome=pb.OUTCOME_SUCCEEDED),
        metadata=await auditor(app),
    )
    assert [(e.action, e.outcome) for e in response.events] == [
        ("audit.events.list", pb.OUTCOME_SUCCEEDED)
    ]
    later = pb.ListAuditEventsRequest(action="access.denied")
    later.start_time.GetCurrentTime()
    later.start_time.seconds += 3600
    assert not (await audit.ListAuditEvents(later, metadata=await auditor(app))).events


@pytest.mark.parametrize(
    ("request_message", "reason"),
    [
        (pb.ListAuditEventsRequest(page_size=-1), "PAGE_SIZE_INVALID"),
        (pb.ListAuditEventsRequest(page_token="forged"), "PAGE_TOKEN_INVALID"),
        (pb.ListAuditEventsRequest(page_token="eyJjIjo1LCJxIjoiMDAwMCJ9"), "PAGE_TOKEN_INVALID"),
        (pb.ListAuditEventsRequest(outcome=99), "OUTCOME_INVALID"),
    ],
)
async def test_bad_list_requests_are_invalid_and_write_nothing(
    server: Server, request_message: pb.ListAuditEventsRequest, reason: str
) -> None:
    app, channel = server
    credentials = await auditor(app)
    head_before = await app.audit.trail.head()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.AuditServiceStub(channel).ListAuditEvents(
            request_message, metadata=credentials
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.bad_request is not None
    assert await app.audit.trail.head() == head_before


async def test_page_token_from_another_query_is_refused(server: Server) -> None:
    app, channel = server
    await deny(channel, 3)
    audit = pb_grpc.AuditServiceStub(channel)
    page = await audit.ListAuditEvents(
        pb.ListAuditEventsRequest(action="access.denied", page_size=1), metadata=await auditor(app)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.ListAuditEvents(
            pb.ListAuditEventsRequest(action="other", page_token=page.next_page_token),
            metadata=await auditor(app),
        )
    assert rich_error(caught.value).reason == "PAGE_TOKEN_INVALID"


async def test_get_audit_event(server: Server) -> None:
    app, channel = server
    await deny(channel, 1)
    audit = pb_grpc.AuditServiceStub(channel)
    response = await audit.GetAuditEvent(
        pb.GetAuditEventRequest(name="audit-events/1"), metadata=await auditor(app)
    )
    assert response.event.sequence == 1
    assert response.event.prev_hash == "0" * 64
    assert len(response.event.hash) == 64
    for name, code in [
        ("audit-events/999", grpc.StatusCode.NOT_FOUND),
        ("audit-events/x", grpc.StatusCode.INVALID_ARGUMENT),
        ("users/1", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit.GetAuditEvent(
                pb.GetAuditEventRequest(name=name), metadata=await auditor(app)
            )
        assert caught.value.code() is code, name


async def test_verify_chain_over_the_api(server: Server) -> None:
    app, channel = server
    credentials = await auditor(app)  # the account's creation and token grant: 4 records
    await deny(channel, 5)
    audit = pb_grpc.AuditServiceStub(channel)
    report = await audit.VerifyAuditChain(pb.VerifyAuditChainRequest(), metadata=credentials)
    assert report.ok
    assert report.checked_count == report.head_sequence == 10  # its own ATTEMPTED included
    async with app.platform.database.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER audit_events_no_update"))
        await connection.execute(
            text("UPDATE audit_events SET peer = 'ipv4:6.6.6.6:1' WHERE sequence = 7")
        )
    report = await audit.VerifyAuditChain(pb.VerifyAuditChainRequest(), metadata=await auditor(app))
    assert (report.ok, report.first_bad_sequence, report.checked_count) == (False, 7, 6)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.VerifyAuditChain(
            pb.VerifyAuditChainRequest(start_sequence=5, end_sequence=2),
            metadata=await auditor(app),
        )
    assert rich_error(caught.value).reason == "SEQUENCE_RANGE_INVALID"


async def test_checkpoint_verifies_with_the_published_jwks(server: Server) -> None:
    app, channel = server
    await deny(channel, 2)
    checkpoint = await pb_grpc.AuditServiceStub(channel).GetAuditCheckpoint(
        pb.GetAuditCheckpointRequest(), metadata=await auditor(app)
    )
    jwks = await identity_grpc.IdentityServiceStub(channel).GetJwks(identity_pb.GetJwksRequest())
    keys = {key["kid"]: key for key in json.loads(jwks.jwks_json)["keys"]}
    public = jwt.PyJWK(keys[checkpoint.key_id]).key
    claims = jwt.decode(checkpoint.signature, public, algorithms=["ES256"])
    assert claims["seq"] == checkpoint.sequence >= 3
    assert claims["head"] == checkpoint.head_hash
    head = await app.audit.trail.get(checkpoint.sequence)
    assert head is not None
    assert head.hash.hex() == checkpoint.head_hash


async def _stream_reconnecting(
    app: KeyholdServer, channel: grpc.aio.Channel, denials: int
) -> list[pb.AuditEvent]:
    """Read until `denials` denial events arrived, dropping the stream every few events
    and resuming from the last sequence received."""
    audit = pb_grpc.AuditServiceStub(channel)
    received: list[pb.AuditEvent] = []

    def seen() -> int:
        return sum(1 for event in received if event.action == "access.denied")

    while seen() < denials:
        call = audit.StreamAuditEvents(
            pb.StreamAuditEventsRequest(after_sequence=received[-1].sequence if received else 0),
            metadata=await auditor(app),
        )
        for _ in range(7):
            response = await asyncio.wait_for(call.read(), timeout=10)
            received.append(response.event)
            if seen() >= denials:
                break
        call.cancel()
    return received


async def _stream_with_concurrent_writer(app: KeyholdServer, channel: grpc.aio.Channel) -> None:
    await deny(channel, 10)
    writer = asyncio.create_task(deny(channel, 30))
    received = await _stream_reconnecting(app, channel, 40)
    await writer
    # Every event exactly once, in order, across all the reconnections (the streams'
    # own open/close records included).
    assert [event.sequence for event in received] == list(range(1, len(received) + 1))
    assert sum(1 for event in received if event.action == "audit.events.stream") >= 6


async def test_stream_replays_then_follows_and_resumes_on_sqlite(server: Server) -> None:
    await _stream_with_concurrent_writer(*server)


@pytest.mark.postgres
async def test_stream_follows_appends_from_another_replica_on_postgres(tmp_path: Path) -> None:
    async with postgres_database() as url:
        # Replicas share the key-encryption keys, as a deployment must.
        keys = "k1:" + base64.b64encode(os.urandom(32)).decode()
        async with (
            running_server(settings_for(tmp_path / "a", url, key_encryption_keys=keys)) as (
                reader_app,
                reader_channel,
            ),
            running_server(settings_for(tmp_path / "b", url, key_encryption_keys=keys)) as (
                _,
                writer_channel,
            ),
        ):
            credentials = await auditor(reader_app)
            head = await reader_app.audit.trail.head()
            assert head is not None
            call = pb_grpc.AuditServiceStub(reader_channel).StreamAuditEvents(
                pb.StreamAuditEventsRequest(after_sequence=head.sequence), metadata=credentials
            )
            first = await asyncio.wait_for(call.read(), timeout=10)
            assert first.event.action == "audit.events.stream"
            loop = asyncio.get_running_loop()
            started = loop.time()
            await deny(writer_channel, 1)  # appended by the other replica
            second = await asyncio.wait_for(call.read(), timeout=10)
            # Woken by NOTIFY, not by the 15 s backstop timeout.
            assert loop.time() - started < 3
            assert second.event.action == "access.denied"
            call.cancel()
