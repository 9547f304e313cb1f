"""The application's use cases on the in-memory fakes: no database, no network, and a
password hash that costs nothing. The token issuer and the sealer are the real ones,
which are pure and fast."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.adapters.crypto.sealer import AeadSealer
from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.lockout import LoginLockout
from keyhold.application.identity.revocations import Revocations
from keyhold.application.identity.sessions import SessionLifetimes, Sessions
from keyhold.domain.audit.actions import Action
from keyhold.domain.call import CallContext, set_current_call
from keyhold.domain.identity.lockout import LockoutPolicy
from keyhold.domain.identity.sessions import NO_RETRY_GRACE, RetryGrace
from keyhold.domain.identity.users import User, UserState
from keyhold.domain.principal import ANONYMOUS, Principal, PrincipalType
from keyhold.domain.signing_keys import SigningKey
from tests.support.fakes import FakeAuditAppender, FakeClock
from tests.support.fakes.hasher import FakePasswordHasher
from tests.support.fakes.lockout import InMemoryLoginFailureStore
from tests.support.fakes.notices import RecordedReplicaNotices
from tests.support.fakes.service_accounts import InMemoryServiceAccountLookup
from tests.support.fakes.sessions import InMemoryRefreshTokenRotator, InMemorySessionState
from tests.support.fakes.store import InMemoryStore
from tests.support.fakes.unit_of_work import FakeUnitOfWorkFactory

AUDIENCE = "keyhold"

PEER = "ipv4:10.0.0.7:40000"
PASSWORD = "correct horse battery"
LOCKOUT = LockoutPolicy(
    threshold=3,
    peer_threshold=50,
    account_threshold=50,
    base_cooldown=timedelta(minutes=1),
    max_cooldown=timedelta(minutes=15),
)


@dataclass
class Ports:
    """What the use cases are built from; every part inspectable by the test."""

    store: InMemoryStore
    unit_of_work: FakeUnitOfWorkFactory
    clock: FakeClock
    audit: FakeAuditAppender
    recorder: AuditRecorder
    hasher: FakePasswordHasher
    failures: InMemoryLoginFailureStore
    lockout: LoginLockout
    revocations: Revocations
    tokens: AccessTokens
    sealer: AeadSealer
    account_lookup: InMemoryServiceAccountLookup
    replicas: RecordedReplicaNotices


def _liveness(
    store: InMemoryStore, clock: FakeClock
) -> tuple[Callable[[Principal], Awaitable[bool]], Callable[[Principal], Awaitable[bool]]]:
    sessions = InMemorySessionState(store, clock.now)
    accounts = InMemoryServiceAccountLookup(store)

    async def session_is_live(principal: Principal) -> bool:
        user_id = principal.subject.removeprefix("users/")
        return await sessions.is_live(principal.session_id or "", user_id)

    async def account_is_live(principal: Principal) -> bool:
        return await accounts.exists(principal.subject.removeprefix("service-accounts/"))

    return session_is_live, account_is_live


def build_ports() -> Ports:
    store = InMemoryStore()
    clock = FakeClock(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    audit = FakeAuditAppender()
    failures = InMemoryLoginFailureStore()
    keys: list[SigningKey] = [Es256KeyGenerator().generate(clock.now())]

    async def fetch_keys() -> list[SigningKey]:
        return keys

    ring = KeyRing(fetch_keys)
    ring.replace(keys)
    session_is_live, account_is_live = _liveness(store, clock)
    replicas = RecordedReplicaNotices()
    revocations = Revocations(session_is_live, account_is_live, notices=replicas, ttl_seconds=60.0)
    tokens = AccessTokens(
        ring,
        issuer="https://keyhold.test",
        audience=AUDIENCE,
        lifetime_seconds=900,
        leeway_seconds=0,
        clock=clock,
        revocations=revocations,
    )
    return Ports(
        store=store,
        unit_of_work=FakeUnitOfWorkFactory(store, failures),
        clock=clock,
        audit=audit,
        recorder=AuditRecorder(audit, clock),
        hasher=FakePasswordHasher(),
        failures=failures,
        lockout=LoginLockout(failures, LOCKOUT, clock),
        revocations=revocations,
        tokens=tokens,
        sealer=AeadSealer(AeadKeyRing.parse("k1:" + base64.b64encode(bytes(range(32))).decode())),
        account_lookup=InMemoryServiceAccountLookup(store),
        replicas=replicas,
    )


def act_as(principal: Principal = ANONYMOUS, peer: str = PEER) -> None:
    """Make the current call one from `principal` at `peer`."""
    set_current_call(
        CallContext(principal=principal, peer=peer, user_agent="tests/1.0", request_id="r-1")
    )


def user_principal(user: User, session_id: str | None = None) -> Principal:
    return Principal(PrincipalType.USER, user.name, user.roles, session_id=session_id)


ADMIN = Principal(PrincipalType.USER, "users/admin", frozenset({"user", "admin"}))


async def add_user(
    ports: Ports,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    *,
    roles: frozenset[str] = frozenset({"user"}),
    state: UserState = UserState.ACTIVE,
    hasher: FakePasswordHasher | None = None,
) -> User:
    """A user stored directly, as if registered earlier."""
    now = ports.clock.now()
    user = User(
        id=email.partition("@")[0],
        email=email,
        display_name=email.partition("@")[0].title(),
        password_hash=await (hasher or FakePasswordHasher()).hash(password),
        email_verified=True,
        state=state,
        roles=roles,
        created_at=now,
        updated_at=now,
    )
    async with ports.unit_of_work() as uow:
        await uow.users.add(user)
    return user


def attempts(ports: Ports, action: Action) -> list[tuple[str, str, str]]:
    """`action`'s records as (outcome, resource name, reason), oldest first, each
    outcome checked to close the attempt before it."""
    records = ports.audit.records(action)
    for attempt, outcome in zip(records[::2], records[1::2], strict=False):
        assert attempt.outcome == "attempted", records
        assert outcome.attempt_id == attempt.attempt_id, records
    return [(r.outcome.value, r.resource_name, r.reason) for r in records]


def outcome_details(ports: Ports, action: Action) -> dict[str, str]:
    """The details of `action`'s last outcome record."""
    return dict(ports.audit.records(action)[-1].details)


LIFETIMES = SessionLifetimes(absolute=timedelta(days=30), idle=timedelta(days=1))


def sessions_on(ports: Ports, grace: RetryGrace = NO_RETRY_GRACE) -> Sessions:
    return Sessions(
        ports.unit_of_work,
        ports.hasher,
        ports.tokens,
        ports.lockout,
        ports.recorder,
        ports.revocations,
        ports.clock,
        LIFETIMES,
        InMemoryRefreshTokenRotator(ports.store, grace),
    )
