"""Hostile input against every RPC, found in the descriptors: random and adversarial
messages, bytes that are not a message at all, forged and malformed credentials, as
anonymous, user, admin and service callers.

Whatever comes in, the server answers with a deliberate status (never INTERNAL or
UNKNOWN) that carries an ErrorInfo, writes nothing for a refused call, and keeps
SERVING. One server serves the whole module, rate limits off so that throttling masks
nothing (one test floods a second server with them on).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from keyhold.adapters.persistence import tables
from keyhold.domain.audit.actions import Action
from keyhold.domain.audit.events import Outcome
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.policy.v1 import policy_pb2
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer
from keyhold.wiring.grpc_api import SERVICES
from tests.support.databases import postgres_database
from tests.support.hostile import (
    authorization_headers,
    forged_page_tokens,
    invalid_payloads,
    other_metadata,
    request_messages,
)
from tests.support.rpcs import Rpc, keyhold_rpcs
from tests.support.servers import (
    PASSWORD,
    bearer,
    running_server,
    service_token,
    settings_for,
    signed_in,
)
from tests.support.status import rich_error

pytestmark = pytest.mark.slow
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

RPCS = keyhold_rpcs()
CALLERS = ("anonymous", "user", "admin", "service")
DELIBERATE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
# Rows a refused call must leave alone. Not login_failures (counting failures is the
# point) nor audit_events (refusals are audited; successes are counted separately).
GUARDED_TABLES = (
    tables.users,
    tables.sessions,
    tables.refresh_tokens,
    tables.one_time_tokens,
    tables.service_accounts,
    tables.providers,
    tables.connections,
    tables.signing_keys,
    tables.trusted_issuers,
    tables.workload_identities,
)
STREAM_WAIT_SECONDS = 0.3
CALL_TIMEOUT_SECONDS = 20.0
NEW_PASSWORD = "another long passphrase 42"

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def ids(rpc: Rpc) -> str:
    return rpc.name


@dataclass(repr=False)
class Answer:
    rpc: Rpc
    error: grpc.aio.AioRpcError | None

    @property
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK if self.error is None else self.error.code()


@dataclass(repr=False)
class Target:
    """The server under attack, its callers, and the names and tokens that make random
    requests land on real resources."""

    app: KeyholdServer
    channel: grpc.aio.Channel
    tokens: dict[str, str] = field(default_factory=dict)
    seeds: list[str] = field(default_factory=list)
    page_tokens: dict[str, list[str]] = field(default_factory=dict)  # by request type
    plausible_values: dict[str, list[str]] = field(default_factory=dict)
    baseline: str = ""  # the fingerprint after the last call: nothing writes in between
    revived: int = 0

    def __repr__(self) -> str:
        return "Target()"

    async def seed(self) -> None:
        for caller in ("user", "admin", "service"):
            await self.revive(caller)
        victim, victim_name = await signed_in(self.app, "victim@example.com")
        identity = identity_grpc.IdentityServiceStub(self.channel)
        provider = provider_grpc.ProviderServiceStub(self.channel)
        admin, user = bearer(self.tokens["admin"]), bearer(self.tokens["user"])
        await provider.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id="keys",
                provider=provider_pb.Provider(display_name="Keys", auth_type=2),
            ),
            metadata=admin,
        )
        await provider.CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id="bank",
                provider=provider_pb.Provider(
                    display_name="Bank",
                    auth_type=1,
                    authorization_endpoint="https://bank.example.com/authorize",
                    token_endpoint="https://bank.example.com/token",
                    client_id="keyhold",
                ),
            ),
            metadata=admin,
        )
        connections = []
        for who in (user, user, bearer(victim)):
            started = await provider.StartConnection(
                provider_pb.StartConnectionRequest(provider="providers/keys", api_key="k-123"),
                metadata=who,
            )
            connections.append(started.connection.name)
        account, secret = await self.app.identity.service_accounts.create("seed", ["audit.read"])
        verification, _ = await self.app.identity.verification.create(victim_name)
        reset, _ = await self.app.identity.passwords.create_reset("victim@example.com")
        me = {
            caller: await identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=bearer(token))
            for caller, token in self.tokens.items()
        }
        self.seeds = [
            victim_name,
            me["user"].subject,
            me["admin"].subject,
            me["user"].session,
            *connections,
            "providers/keys",
            "providers/bank",
            account.name,
            account.client_id,
            secret,
            verification,
            reset,
            *self.tokens.values(),
            "audit-events/1",
            "victim@example.com",
            "user@example.com",
            PASSWORD,
            NEW_PASSWORD,
            "https://app.example.com/callback",
            "audit.read",
            "admin",
        ]
        self.page_tokens = await self._genuine_page_tokens(me["user"].subject)
        resource_names = [seed for seed in self.seeds if re.fullmatch(r"[a-z-]+/[\w-]+", seed)]
        self.plausible_values = {
            "name": [*resource_names, "users/me", "sessions/current"],
            "email": ["victim@example.com", "user@example.com", "new@example.com"],
            "password": [PASSWORD, NEW_PASSWORD],
            "token": [verification, reset, *self.tokens.values()],
            "client": [account.client_id, secret],
            "scope": ["audit.read", "identity.introspect", "accounts"],
            "uri": [
                "https://app.example.com/callback",
                "https://bank.example.com/token",
                "https://[",
                "https://[::1/token",
                "https://bank.example.com:99999/token",
                "https://bank.example.com:-1/token",
                "https://bank.example.com:x/token",
                "http://localhost/token",
                "javascript:alert(1)",
            ],
            "id": ["bank2", "keys", "new-provider"],
            "display": ["Ada", "Bank"],
            "api_key": ["k-456"],
        }

    async def _genuine_page_tokens(self, user_name: str) -> dict[str, list[str]]:
        """A next_page_token from every List method, for forging others from."""
        await signed_in(self.app, "second-session@example.com")  # a second user, session
        await self.app.identity.sessions.login(self.tokens_email("admin"), PASSWORD, "t")
        second, _ = await self.app.identity.service_accounts.create("second", [])
        found: dict[str, list[str]] = {}
        for rpc in RPCS:
            if not rpc.descriptor.name.startswith("List"):
                continue
            request = rpc.request_class()(page_size=1)
            if "parent" in rpc.descriptor.input_type.fields_by_name:
                request.parent = (
                    "users/me"
                    if "Session" in rpc.name
                    else second.name
                    if "ServiceAccountKeys" in rpc.name
                    else user_name
                )
            response = await rpc.typed(self.channel)(request, metadata=bearer(self._lister(rpc)))
            if response.next_page_token:
                found[rpc.descriptor.input_type.full_name] = [response.next_page_token]
        assert len(found) >= 5, "every List method should have given a second page"
        return found

    def plausible(self, field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        """Values that fit a string field by its name (and for resource names, by the
        message it is in), so that calls get past validation to the work."""
        name = field.name
        if field.type != FieldDescriptor.TYPE_STRING:
            return None
        if name == "page_token":
            return forged_page_tokens(self.page_tokens.get(field.containing_type.full_name, []))
        if name in ("name", "resource", "parent", "user", "actor", "provider"):
            return st.sampled_from(self._resource_names(name, field.containing_type.name))
        if name.endswith(("_uri", "endpoint")):
            return st.sampled_from(self.plausible_values["uri"])
        key = next((key for key in self.plausible_values if key in name), "")
        return st.sampled_from(self.plausible_values[key]) if key else None

    def _resource_names(self, field_name: str, message_name: str) -> list[str]:
        names = self.plausible_values["name"]
        if field_name in ("parent", "user", "actor"):
            wanted = "User"
        elif field_name == "provider":
            wanted = "Provider"
        else:  # `name` of GetConnectionRequest, User, ...: the collection in the message's name
            wanted = message_name
        fitting = [name for name in names if _singular_type(name.partition("/")[0]) in wanted]
        return fitting or names

    def likely_callers(self, rpc: Rpc) -> st.SearchStrategy[str]:
        """Mostly callers the method's policy admits, so that calls reach the handler."""
        admitted = [caller for caller in CALLERS if admits(rpc.auth, caller)]
        return st.sampled_from((*admitted, *admitted, *admitted, *CALLERS))

    def _lister(self, rpc: Rpc) -> str:
        return self.tokens["service" if rpc.auth.scopes else "admin"]

    @staticmethod
    def tokens_email(caller: str) -> str:
        return f"{caller}@example.com"

    async def revive(self, caller: str) -> None:
        """A fresh principal for `caller`, after a fuzzed call deleted, disabled or
        demoted the previous one."""
        self.baseline = ""
        if caller == "service":
            scopes = sorted({scope for rpc in RPCS for scope in rpc.auth.scopes})
            account, secret = await self.app.identity.service_accounts.create("fuzz", scopes)
            issued = await self.app.identity.service_accounts.issue_token(
                account.client_id, secret, []
            )
            self.tokens[caller] = issued.token.token
            return
        roles = ("admin", "user") if caller == "admin" else ("user",)
        email = self.tokens_email(caller) if caller not in self.tokens else None
        if email is None:
            self.revived += 1
            email = f"{caller}-{self.revived}@example.com"
        self.tokens[caller], _ = await signed_in(self.app, email, roles)

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        return () if caller == "anonymous" else bearer(self.tokens[caller])

    async def fingerprint(self) -> str:
        digest = hashlib.sha256()
        async with self.app.platform.database.engine.connect() as connection:
            for table in GUARDED_TABLES:
                rows = await connection.execute(select(table).order_by(*table.primary_key))
                digest.update(repr(rows.all()).encode())
            succeeded = await connection.execute(
                select(func.count())
                .select_from(tables.audit_events)
                .where(tables.audit_events.c.outcome == Outcome.SUCCEEDED.value)
            )
            digest.update(str(succeeded.scalar_one()).encode())
        return digest.hexdigest()

    async def _streams_finished(self) -> None:
        """Wait for the outcome record a cancelled stream writes as it ends, so that it
        does not land in the middle of the next call's before-and-after."""
        events = tables.audit_events
        attempt, outcome = events.alias("attempt"), events.alias("outcome")
        open_streams = (
            select(func.count())
            .select_from(attempt)
            .where(
                attempt.c.action == Action.AUDIT_EVENTS_STREAM.value,
                attempt.c.outcome == Outcome.ATTEMPTED.value,
                ~select(outcome.c.sequence)
                .where(
                    outcome.c.attempt_id == attempt.c.attempt_id,
                    outcome.c.outcome != Outcome.ATTEMPTED.value,
                )
                .exists(),
            )
        )
        for _ in range(100):
            async with self.app.platform.database.engine.connect() as connection:
                if (await connection.execute(open_streams)).scalar_one() == 0:
                    return
            await asyncio.sleep(0.02)
        raise AssertionError("a cancelled stream never recorded its outcome")

    async def call(
        self, rpc: Rpc, request: Any, metadata: Sequence[tuple[str, Any]], *, raw: bool = False
    ) -> Answer:
        method = rpc.raw(self.channel) if raw else rpc.typed(self.channel)
        try:
            if rpc.streaming:
                stream = method(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                try:
                    await asyncio.wait_for(stream.read(), STREAM_WAIT_SECONDS)
                except TimeoutError:
                    pass  # admitted, and waiting for events to be appended
                finally:
                    stream.cancel()
                    await self._streams_finished()
            else:
                await method(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            return Answer(rpc, error)
        return Answer(rpc, None)

    async def attack(
        self, rpc: Rpc, request: Any, metadata: Sequence[tuple[str, Any]], *, raw: bool = False
    ) -> Answer:
        """One call, checked: a deliberate status with an ErrorInfo, nothing written when
        refused, the server still serving."""
        before = self.baseline or await self.fingerprint()
        outcome = await self.call(rpc, request, metadata, raw=raw)
        self.baseline = await self.fingerprint()
        if outcome.error is not None:
            assert_deliberate(outcome)
            assert self.baseline == before, f"{rpc.name} wrote although refused"
        await self.assert_serving()
        return outcome

    async def assert_serving(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def _singular_type(collection: str) -> str:
    """`service-accounts` → `ServiceAccount`, as in message names."""
    return "".join(part.capitalize() for part in collection.split("-")).removesuffix("s")


def admits(auth: policy_pb2.AuthPolicy, caller: str) -> bool:
    """Roughly whether the declared policy lets `caller` in (the authorization matrix
    checks it exactly)."""
    if auth.public:
        return True
    if caller == "anonymous":
        return False
    kind = (
        policy_pb2.PRINCIPAL_TYPE_SERVICE if caller == "service" else policy_pb2.PRINCIPAL_TYPE_USER
    )
    if auth.principal_types and kind not in auth.principal_types:
        return False
    return caller in ("admin", "service") if (auth.roles or auth.scopes) else True


def assert_deliberate(outcome: Answer) -> None:
    assert outcome.error is not None
    error = rich_error(outcome.error)
    assert error.code in DELIBERATE, f"{outcome.rpc.name}: {error.code} {error.message!r}"
    assert error.error_info is not None, f"{outcome.rpc.name}: {error.code} without ErrorInfo"
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", error.error_info.reason), error.error_info.reason
    assert error.error_info.domain.startswith("keyhold"), error.error_info.domain


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


@asynccontextmanager
async def attacked_server(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None
) -> AsyncIterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("hostile")
    server_settings = settings_for(
        data_dir,
        database_url,
        rate_limits_enabled=False,
        # Lockouts are tested elsewhere; here they would turn most logins into
        # RESOURCE_EXHAUSTED and hide what lies behind.
        lockout_threshold=100,
        lockout_peer_threshold=10_000,
        # Generating big examples holds the event loop a while; a probe of the database
        # that waits for it must not count as an outage.
        health_check_interval_seconds=2.0,
    )
    async with running_server(server_settings) as (app, channel):
        attacked = Target(app, channel)
        await attacked.seed()
        yield attacked
        await attacked.assert_serving()


def test_the_descriptors_list_every_served_rpc() -> None:
    served = {
        f"/{service.full_name}/{method.name}" for service in SERVICES for method in service.methods
    }
    assert {rpc.path for rpc in RPCS} == served


@ON_MODULE_LOOP
@pytest.mark.parametrize("rpc", RPCS, ids=ids)
@settings(FUZZ, max_examples=25)
@given(data=st.data())
async def test_adversarial_messages_get_deliberate_answers(
    target: Target, rpc: Rpc, data: st.DataObject
) -> None:
    request = data.draw(
        request_messages(rpc.descriptor.input_type, target.seeds, target.plausible), label="request"
    )
    caller = data.draw(target.likely_callers(rpc), label="caller")
    if request.ByteSize() > target.app.settings.max_receive_message_bytes // 2:
        request = rpc.request_class()()
    outcome = await target.attack(rpc, request, target.metadata(caller))
    if outcome.code is grpc.StatusCode.UNAUTHENTICATED and caller != "anonymous":
        await target.revive(caller)  # the fuzz deleted, disabled or demoted it


@ON_MODULE_LOOP
@settings(FUZZ, max_examples=200)
@given(data=st.data())
async def test_bytes_that_are_no_message_are_invalid_argument(
    target: Target, data: st.DataObject
) -> None:
    rpc = data.draw(st.sampled_from(RPCS), label="rpc")
    payload = data.draw(invalid_payloads(rpc.descriptor.input_type), label="payload")
    caller = data.draw(st.sampled_from(CALLERS), label="caller")
    try:
        rpc.request_class().FromString(payload)
    except DecodeError:
        decodable = False
    else:
        decodable = True
    outcome = await target.attack(rpc, payload, target.metadata(caller), raw=True)
    if not decodable:
        denied = caller == "anonymous" and not rpc.auth.public
        expected = grpc.StatusCode.UNAUTHENTICATED if denied else grpc.StatusCode.INVALID_ARGUMENT
        assert outcome.code is expected, f"{rpc.name}: {outcome.code}"


@ON_MODULE_LOOP
@settings(FUZZ, max_examples=200)
@given(data=st.data())
async def test_forged_and_malformed_credentials_authenticate_no_one(
    target: Target, data: st.DataObject
) -> None:
    rpc = data.draw(st.sampled_from(RPCS), label="rpc")
    genuine = sorted(target.tokens.values())
    header = data.draw(authorization_headers(genuine), label="authorization")
    metadata: list[tuple[str, Any]] = data.draw(other_metadata(), label="other metadata")
    if header is not None:
        metadata.append(("authorization", header))
    outcome = await target.attack(rpc, rpc.request_class()(), metadata)
    if not rpc.auth.public:
        assert outcome.code is grpc.StatusCode.UNAUTHENTICATED, f"{rpc.name}: {header!r:.80}"


async def test_a_flood_is_throttled_with_error_info(tmp_path: Path) -> None:
    """Rate limits on: every rate-limited RPC, flooded at once past its smallest limit,
    refuses the excess RESOURCE_EXHAUSTED with RATE_LIMITED and RetryInfo."""
    limited = [rpc for rpc in RPCS if rpc.descriptor.GetOptions().Extensions[policy_pb2.rate_limit]]
    assert limited
    async with running_server(settings_for(tmp_path)) as (app, channel):
        admin, _ = await signed_in(app, "admin@example.com", ("admin", "user"))
        service = await service_token(app, ())
        caller = Target(app, channel)

        def credentials(rpc: Rpc) -> tuple[tuple[str, str], ...]:
            if rpc.auth.public:
                return ()
            services_only = list(rpc.auth.principal_types) == [policy_pb2.PRINCIPAL_TYPE_SERVICE]
            return bearer(service if services_only else admin)

        async def flood(rpc: Rpc) -> list[grpc.aio.AioRpcError]:
            limits = rpc.descriptor.GetOptions().Extensions[policy_pb2.rate_limit]
            smallest = min(int(limit.limit.split("/")[0]) for limit in limits)
            metadata = credentials(rpc)
            calls = [caller.call(rpc, rpc.request_class()(), metadata) for _ in range(smallest + 3)]
            outcomes = await asyncio.gather(*calls)
            return [outcome.error for outcome in outcomes if outcome.error is not None]

        for rpc in limited:
            errors = await flood(rpc)
            throttled = [
                rich_error(error)
                for error in errors
                if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert len(throttled) == 3, rpc.name
            for error in throttled:
                assert error.reason == "RATE_LIMITED", rpc.name
                assert error.retry_info is not None
            for error in errors:
                assert_deliberate(Answer(rpc, error))
